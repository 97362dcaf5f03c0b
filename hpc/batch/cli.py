"""``pneumo hpc predict|predict-shard|merge``: batch prediction on Slurm (see :mod:`hpc.batch`)."""
from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path


def default_out(inputs: str) -> Path:
    """``runs/predict-<name>``: the folder's name or the CSV's stem."""
    path = Path(inputs.rstrip("/") or inputs)
    return Path("runs") / f"predict-{path.stem if path.suffix.lower() == '.csv' else path.name or 'inputs'}"


def _predict(args: argparse.Namespace) -> int:
    from hpc.batch.jobs import PredictJobOptions, render_predict_jobs, submit_predict_jobs, task_ranges, \
        write_predict_jobs
    from hpc.batch.plan import build_plan, pending_shards, write_plan
    from hpc.render import HpcError

    plan = build_plan(args.artifact, args.inputs, args.array, backend=args.backend, batch_size=args.batch_size,
                      site=args.site, ood_policy=args.ood_policy, path_column=args.path_column)
    options = PredictJobOptions(
        partition=args.partition, account=args.account, qos=args.qos, time=args.time,
        cpus_per_task=args.cpus_per_task, gpus_per_node=args.gpus_per_node, mem=args.mem, job_name=args.job_name,
        log_dir=args.log_dir, activate=args.activate, requeue=args.requeue, extra_sbatch=tuple(args.sbatch or ()),
        pneumo=args.pneumo, max_running=args.max_running)
    jobs = render_predict_jobs(plan, args.out or default_out(args.inputs), options)
    missing = [e.path for e in plan.inputs if e.size is None]
    if missing:
        print(f"warning: {len(missing)} of the {len(plan.inputs)} listed images do not exist (first: {missing[0]}); "
              "they become error rows", file=sys.stderr)
    pending = pending_shards(jobs.batch, plan)
    done = plan.shards - len(pending)
    status = (f"{len(plan.inputs)} images in {plan.shards} shards; "
              + (f"{done} already done, skipped; " if done else "")
              + (f"tasks {task_ranges(pending)} to run" if pending else "every shard done: merge only"))
    if args.dry_run:
        sub = submit_predict_jobs(jobs, pending, dry_run=True)
        sys.stdout.write(f"# ---- {jobs.array_path} ----\n{jobs.array_script}")
        sys.stdout.write(f"# ---- {jobs.merge_path} ----\n{jobs.merge_script}")
        print(f"# dry run: {status}. Would write {jobs.batch.plan} and both scripts, and run:")
        for line in sub.command_lines:
            print(f"#     {line}")
        return 0
    if not args.no_submit and shutil.which("sbatch") is None:
        raise HpcError("sbatch not found on PATH: submit from a Slurm login node, or pass --no-submit to write the "
                       "plan and scripts only (then run the shards with `pneumo hpc predict-shard`, or sbatch them "
                       "elsewhere)")
    write_plan(jobs.batch, plan)
    if args.no_submit:
        write_predict_jobs(jobs)
        sub = submit_predict_jobs(jobs, pending, dry_run=True)
        print(f"wrote {jobs.batch.plan}, {jobs.array_path.name} and {jobs.merge_path.name}: {status}. Submit with:",
              file=sys.stderr)
        for line in sub.command_lines:
            print(f"    {line}", file=sys.stderr)
        print(f"or, without Slurm, run `pneumo hpc predict-shard {jobs.batch.root} --shard I` for each shard, then "
              f"`pneumo hpc merge {jobs.batch.root}`", file=sys.stderr)
        return 0
    sub = submit_predict_jobs(jobs, pending)
    print(sub.merge_job_id)
    array = (f"array job {sub.array_job_id} (tasks {task_ranges(sub.tasks)}), then " if sub.array_job_id else "")
    print(f"submitted {array}merge job {sub.merge_job_id}: {status}. Logs in {jobs.log_dir}; results will be "
          f"{jobs.batch.predictions_csv} and {jobs.batch.predictions_json.name}", file=sys.stderr)
    return 0


def _predict_shard(args: argparse.Namespace) -> int:
    from hpc.batch.shard import score_shard

    outcome = score_shard(args.out, args.shard, force=args.force)
    m = outcome.marker
    verb = "already done" if outcome.skipped else "scored"
    print(f"shard {outcome.index} of {m.shards} {verb}: {m.classified} classified, {m.failed} failed -> "
          f"{outcome.rows}", file=sys.stderr)
    return 0


def _merge(args: argparse.Namespace) -> int:
    from hpc.batch.merge import merge

    summary = merge(args.out)
    print(f"merged {summary.count} images ({summary.classified} classified, {summary.failed} failed: see the error "
          f"column): {summary.csv}, {summary.json}", file=sys.stderr)
    return 0


def add_batch_commands(hs: argparse._SubParsersAction, int_at_least: Callable[[int], Callable[[str], int]]) -> None:
    """Add ``predict``, ``predict-shard`` and ``merge`` to the ``pneumo hpc`` subparsers ``hs``."""
    from pneumo_core.cli.argtypes import positive_int
    from pneumo_core.config.schema import BACKENDS

    p = hs.add_parser("predict", help="score a folder or CSV manifest of images with a Slurm array job, then merge",
                      description="Plan a batch prediction in DIR (the input list is frozen in DIR/batch.json), then "
                                  "submit an array job, one task per shard, and a merge job that runs after it and "
                                  "writes DIR/predictions.csv and DIR/predictions.json. Submitting the same command "
                                  "again runs only the shards that are not done.")
    p.add_argument("artifact", help="model artifact folder, e.g. models/pneumo-resnet18-kermany")
    p.add_argument("inputs", metavar="FOLDER_OR_CSV", help="a folder (searched recursively for .jpg, .jpeg, .png and "
                   ".dcm) or a CSV manifest with a column of image paths (relative to the CSV's folder)")
    p.add_argument("--array", type=int_at_least(1), required=True, metavar="N",
                   help="number of shards, one array task each")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/predict-<name of FOLDER_OR_CSV>)")
    p.add_argument("--path-column", default="path", metavar="NAME", help="CSV column of image paths (default path)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default): each task picks the fastest backend that matches torch fp32 on its node")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--site", help="use this site's operating point (fitted by `pneumo calibrate --site`)")
    p.add_argument("--ood-policy", choices=["flag", "reject"], default="flag",
                   help="an image unlike the training X-rays: flag it (default) or make it an error row")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="print both scripts and the sbatch commands; write and "
                      "submit nothing")
    what.add_argument("--no-submit", action="store_true", help="write the plan and both scripts, print the sbatch "
                      "commands, submit nothing (or run the shards without Slurm with predict-shard, then merge)")
    r = p.add_argument_group("resources of each array task (the merge job: 1 CPU, the same memory and time)")
    r.add_argument("--partition", metavar="P", help="partition")
    r.add_argument("--account", metavar="A", help="account to charge")
    r.add_argument("--qos", metavar="Q", help="quality of service")
    r.add_argument("--time", default="02:00:00", metavar="T", help="time limit per task (default 02:00:00)")
    r.add_argument("--mem", default="8G", metavar="M", help="memory per task (default 8G)")
    r.add_argument("--cpus-per-task", type=int_at_least(1), default=4, metavar="C", help="CPUs per task (default 4)")
    r.add_argument("--gpus-per-node", type=int_at_least(0), default=0, metavar="G",
                   help="GPUs per task (default 0; with one, --backend auto picks it)")
    r.add_argument("--max-running", type=int_at_least(1), metavar="M", help="run at most M tasks at once (--array %%M)")
    r.add_argument("--job-name", default="pneumo-predict", metavar="NAME",
                   help="job name (default pneumo-predict; the merge job adds -merge)")
    r.add_argument("--sbatch", action="append", metavar="OPTION",
                   help="extra #SBATCH option for both jobs, e.g. --sbatch=--constraint=a100")
    r.add_argument("--log-dir", metavar="DIR", help="where Slurm logs go (default DIR/logs)")
    r.add_argument("--activate", metavar="LINE", help="shell line that activates the environment in the jobs")
    r.add_argument("--pneumo", metavar="CMD", help="command that runs pneumo in the jobs (default: 'pneumo' when an "
                   "environment is activated, else this interpreter's pneumo script)")
    req = r.add_mutually_exclusive_group()
    req.add_argument("--requeue", dest="requeue", action="store_true", default=True,
                     help="let Slurm requeue a preempted task (default)")
    req.add_argument("--no-requeue", dest="requeue", action="store_false", help="do not requeue")
    p.set_defaults(handler=_predict)

    s = hs.add_parser("predict-shard", help="score one shard of a batch prediction (what array task I runs)",
                      description="Score shard I of the plan in DIR (written by `pneumo hpc predict`) into "
                                  "DIR/shards/, unless it is already done. Runs without Slurm too.")
    s.add_argument("out", metavar="DIR", help="the batch prediction folder (holds batch.json)")
    s.add_argument("--shard", type=int_at_least(0), required=True, metavar="I", help="shard index, 0 to N-1")
    s.add_argument("--force", action="store_true", help="score the shard even if it is already done")
    s.set_defaults(handler=_predict_shard)

    m = hs.add_parser("merge", help="merge the shards of a batch prediction into predictions.csv and .json",
                      description="Merge DIR/shards/ into DIR/predictions.csv and DIR/predictions.json; fails, "
                                  "naming them, when shards are missing or incomplete.")
    m.add_argument("out", metavar="DIR", help="the batch prediction folder (holds batch.json)")
    m.set_defaults(handler=_merge)
