"""``pneumo`` entry point: subcommands register themselves from small modules."""
from __future__ import annotations

import argparse
import importlib.metadata as md
import logging
import os
import sys
from typing import Optional, Sequence

from pneumo_core.errors import PneumoError


def build_parser() -> argparse.ArgumentParser:
    from pneumo_core.cli import (calibrate_cmd, config_cmd, data_cmd, ensemble_cmd, evaluate_cmd, export_cmd,
                                 ood_cmd, plugins_cmd, predict_cmd, train_cmd)

    parser = argparse.ArgumentParser(prog="pneumo", description="Pluggable pneumonia classifier for chest X-rays.")
    parser.add_argument("--version", action="version", version=f"pneumo {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (plugins_cmd, config_cmd, train_cmd, evaluate_cmd, ensemble_cmd, predict_cmd, export_cmd, ood_cmd,
                   calibrate_cmd, data_cmd):
        module.add_cli(sub)
    # Commands from other packages (pneumo's own `serve` and `hpc`, third-party tools) register through the
    # `pneumo.cli` entry-point group, so the core never imports them by name.
    for ep in md.entry_points(group="pneumo.cli"):
        try:
            ep.load()(sub)
        except Exception as exc:  # a broken add-on must not take the whole CLI down
            print(f"warning: CLI extension '{ep.name}' ({ep.value}) failed to load: {exc}", file=sys.stderr)
    return parser


def _version() -> str:
    from pneumo_core import __version__

    return __version__


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        code = args.handler(args)
    except PneumoError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
