"""``pneumo evaluate ARTIFACT --data CONFIG``: metrics, plots and a report for a data split."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pneumo_core.cli.config_cmd import add_set_option
from pneumo_core.config.schema import BACKENDS


def _run(args) -> int:
    from pneumo_core.evaluation.evaluate import evaluate_artifact

    metrics = evaluate_artifact(args.artifact, args.data, split=args.split, out_dir=Path(args.out) if args.out else None,
                                overrides=args.set or [], bootstrap=args.bootstrap, backend=args.backend)
    print(json.dumps(metrics, indent=2))
    out = Path(args.out) if args.out else Path(args.artifact) / f"eval-{args.split}"
    print(f"wrote metrics.json, report.md and plots to {out}", file=sys.stderr)
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model artifact on a dataset split")
    p.add_argument("artifact")
    p.add_argument("--data", required=True, help="config whose data section names the dataset")
    p.add_argument("--split", default="test", choices=["train", "val", "temporal", "test", "all"],
                   help="test: the dataset's own; val/temporal: the validation splits training drew")
    p.add_argument("--out", help="folder for metrics.json, plots and report (default: ARTIFACT/eval-<split>)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default): the fastest backend whose probabilities match torch fp32")
    add_set_option(p)
    p.set_defaults(handler=_run)
