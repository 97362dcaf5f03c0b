"""``pneumo ensemble A B ... --out E --data CONFIG``: one artifact from several trained ones."""
from __future__ import annotations

import sys
from pathlib import Path

from pneumo_core.cli.config_cmd import add_set_option


def _run(args) -> int:
    from pneumo_core.evaluation.combine import build_ensemble, parse_views

    out = build_ensemble(args.artifacts, args.out, args.data, args.set or [], parse_views(args.tta), args.bootstrap)
    print(f"ensemble artifact: {out}")
    print(f"model card: {Path(out) / 'report.md'}", file=sys.stderr)
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("ensemble", help="combine trained artifacts (and test-time views) into one artifact")
    p.add_argument("artifacts", nargs="+", help="trained artifacts with the same classes and input")
    p.add_argument("--out", required=True, help="new folder for the ensemble artifact")
    p.add_argument("--data", required=True, help="config whose data section gives the validation split "
                   "(data.select_on) that fits the temperature and threshold")
    p.add_argument("--tta", default="none", help='test-time views: "none", "default" (identity, +/-4%% shifts, '
                   '+/-6%% zoom) or "dx,dy,scale;..."; one artifact with --tta adds views to a single model')
    p.add_argument("--bootstrap", type=int, default=1000)
    add_set_option(p)
    p.set_defaults(handler=_run)
