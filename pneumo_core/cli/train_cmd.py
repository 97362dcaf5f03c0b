"""``pneumo train CONFIG``."""
from __future__ import annotations

import sys
from pathlib import Path

from pneumo_core.cli.config_cmd import add_set_option


def _run(args) -> int:
    from pneumo_core.config import load_config
    from pneumo_core.training import EXIT_PREEMPTED, TrainingInterrupted, train

    rc = load_config(args.config, args.set or [])
    run_dir = Path(args.run_dir or Path("runs") / rc.config.name)
    try:
        artifact = train(rc, run_dir, resume=not args.no_resume,
                         progress=None if not args.no_progress else False)
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return EXIT_PREEMPTED
    import os

    if int(os.environ.get("RANK", 0)) == 0:
        print(f"artifact: {artifact}")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("train", help="train a model; resumes when the run dir has a checkpoint")
    p.add_argument("config")
    add_set_option(p)
    p.add_argument("--run-dir", help="run directory (default runs/<name>)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="resume from the run dir's checkpoint (the default)")
    group.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_run)
