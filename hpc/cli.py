"""``pneumo hpc render|submit``: Slurm batch scripts for training runs; ``pneumo hpc predict``
(with ``predict-shard`` and ``merge``): batch prediction as an array job (see :mod:`hpc.batch`)."""
from __future__ import annotations

import argparse
import sys

from hpc.render import DEFAULT_RDZV_PORT, TEMPLATES, JobOptions


def _options(args) -> JobOptions:
    return JobOptions(
        nodes=args.nodes, gpus_per_node=args.gpus_per_node, procs_per_node=args.procs_per_node,
        cpus_per_task=args.cpus_per_task, mem=args.mem, time=args.time, partition=args.partition,
        account=args.account, qos=args.qos, job_name=args.job_name, output_dir=args.output_dir,
        activate=args.activate, signal_seconds=args.signal_seconds, requeue=args.requeue,
        extra_sbatch=tuple(args.sbatch or ()), array=args.array, template=args.template, run_dir=args.run_dir,
        pneumo=args.pneumo, torchrun=args.torchrun, rdzv_port=args.rdzv_port)


def _warn(plan) -> None:
    for line in plan.warnings:
        print(f"warning: {line}", file=sys.stderr)


def _render(args) -> int:
    from hpc.render import render_job

    plan, script = render_job(args.config, args.set or [], _options(args))
    _warn(plan)
    if args.output:
        from pathlib import Path

        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(script)
    return 0


def _submit(args) -> int:
    from hpc.render import render_job
    from hpc.submit import submit

    plan, script = render_job(args.config, args.set or [], _options(args))
    _warn(plan)
    result = submit(plan, script, dry_run=args.dry_run)
    if args.dry_run:
        sys.stdout.write(script)
        print(f"# dry run: would write {result.script} and run: {result.command_line}")
        return 0
    print(result.job_id)
    print(f"submitted job {result.job_id}: script {result.script}, log {result.log_path}, run dir {plan.run_dir}",
          file=sys.stderr)
    return 0


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _add_job_options(p: argparse.ArgumentParser) -> None:
    from pneumo_core.cli.config_cmd import add_set_option

    p.add_argument("config", help="experiment config (YAML); its hpc section gives the defaults")
    add_set_option(p)
    r = p.add_argument_group("resources (default: the config's hpc section)")
    r.add_argument("--nodes", type=_int_at_least(1), metavar="N", help="nodes (hpc.nodes)")
    r.add_argument("--gpus-per-node", type=_int_at_least(0), metavar="G",
                   help="GPUs per node, one training process each (hpc.gpus_per_node)")
    r.add_argument("--procs-per-node", type=_int_at_least(1), metavar="P",
                   help="training processes per node without GPUs (CPU DDP; default 1)")
    r.add_argument("--cpus-per-task", type=_int_at_least(1), metavar="C",
                   help="CPUs per node for the training processes (hpc.cpus_per_task)")
    r.add_argument("--mem", metavar="M", help="memory per node, e.g. 32G (hpc.mem)")
    r.add_argument("--time", metavar="T", help="time limit, e.g. 04:00:00 (hpc.time)")
    r.add_argument("--partition", metavar="P", help="partition (hpc.partition)")
    r.add_argument("--account", metavar="A", help="account to charge (hpc.account)")
    r.add_argument("--qos", metavar="Q", help="quality of service (hpc.qos)")
    r.add_argument("--job-name", metavar="NAME", help="job name (hpc.job_name)")
    r.add_argument("--sbatch", action="append", metavar="OPTION",
                   help="extra #SBATCH option, e.g. --sbatch=--constraint=a100 (adds to hpc.extra_sbatch)")
    j = p.add_argument_group("job")
    j.add_argument("--template", metavar="|".join(TEMPLATES),
                   help="script template (default: array with --array, multi for several nodes, else single)")
    j.add_argument("--array", action="store_true", help="an array job over the config's hpc.sweep")
    j.add_argument("--run-dir", metavar="DIR", help="run directory (default OUTPUT_DIR/<name>; "
                   "an array task uses DIR/sweep-<task>)")
    j.add_argument("--output-dir", metavar="DIR", help="where Slurm logs go, and runs by default (hpc.output_dir)")
    j.add_argument("--activate", metavar="LINE", help="shell line that activates the environment (hpc.activate)")
    j.add_argument("--signal-seconds", type=_int_at_least(1), metavar="S",
                   help="send USR1 this many seconds before the time limit (hpc.signal_seconds)")
    req = j.add_mutually_exclusive_group()
    req.add_argument("--requeue", dest="requeue", action="store_true", default=None,
                     help="requeue after a signal-triggered checkpoint (hpc.requeue)")
    req.add_argument("--no-requeue", dest="requeue", action="store_false", help="do not requeue")
    j.add_argument("--pneumo", metavar="CMD", help="command that runs pneumo in the job (default: 'pneumo' "
                   "when an environment is activated, else this interpreter's pneumo script)")
    j.add_argument("--torchrun", metavar="CMD", help="command that runs torchrun in the job (default: like --pneumo)")
    j.add_argument("--rdzv-port", type=_int_at_least(1), default=DEFAULT_RDZV_PORT, metavar="PORT",
                   help=f"c10d rendezvous port on the first node (default {DEFAULT_RDZV_PORT})")


def add_cli(sub) -> None:
    p = sub.add_parser("hpc", help="Slurm batch scripts: render one, or submit it with sbatch; batch prediction",
                       description="Slurm batch scripts for training: single node, multi-node DDP, array sweeps; "
                                   "they checkpoint on USR1/TERM and requeue themselves. `pneumo hpc predict` scores "
                                   "a folder or CSV of images as an array job and merges the shards.")
    hs = p.add_subparsers(dest="hpc_command", metavar="{render,submit,predict,predict-shard,merge}", required=True)
    r = hs.add_parser("render", help="print the batch script for a config")
    _add_job_options(r)
    r.add_argument("-o", "--output", metavar="FILE", help="write the script to FILE instead of printing it")
    r.set_defaults(handler=_render)
    s = hs.add_parser("submit", help="write the batch script next to the run and submit it with sbatch")
    _add_job_options(s)
    s.add_argument("--dry-run", action="store_true", help="print the script and the sbatch command; submit nothing")
    s.set_defaults(handler=_submit)
    from hpc.batch.cli import add_batch_commands

    add_batch_commands(hs, _int_at_least)
