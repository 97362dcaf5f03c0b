"""The two batch scripts of a batch prediction and their submission.

``predict-array.sbatch`` (``hpc/templates/predict-array.sbatch.j2``) is an array job whose task
``i`` runs ``pneumo hpc predict-shard DIR --shard i``; ``predict-merge.sbatch`` runs
``pneumo hpc merge DIR`` and is submitted with ``--dependency=afterany:<array job id>``, so that
it runs when every task has ended, whether or not all succeeded, and names the shards that are
missing. Only the shards that are not done are submitted (``sbatch --array=1,3``); when all are
done, only the merge job is.
"""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hpc.batch.plan import BatchDir, BatchPlan
from hpc.render import _MEM, _TIME, HpcError, _environment, _extra_line, _one_line, _sbatch_value, _words, \
    default_pneumo
from hpc.submit import run_sbatch

ARRAY_SCRIPT, MERGE_SCRIPT = "predict-array.sbatch", "predict-merge.sbatch"


@dataclass(frozen=True)
class PredictJobOptions:
    """Slurm resources of each array task (the merge job takes one CPU, the same memory and time)."""

    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time: str = "02:00:00"
    cpus_per_task: int = 4
    gpus_per_node: int = 0
    mem: Optional[str] = "8G"
    job_name: str = "pneumo-predict"
    log_dir: Optional[str] = None  # default DIR/logs
    activate: Optional[str] = None
    requeue: bool = True
    extra_sbatch: tuple[str, ...] = ()
    pneumo: Optional[str] = None  # default: see hpc.render.default_pneumo
    max_running: Optional[int] = None  # the array's %N


@dataclass(frozen=True)
class PredictJobs:
    """The rendered scripts and where they go."""

    batch: BatchDir
    shards: int
    array_script: str
    merge_script: str
    log_dir: Path
    job_name: str
    max_running: Optional[int]

    @property
    def array_path(self) -> Path:
        return self.batch.root / ARRAY_SCRIPT

    @property
    def merge_path(self) -> Path:
        return self.batch.root / MERGE_SCRIPT


@dataclass(frozen=True)
class PredictSubmission:
    """What was (or, for a dry run, would be) submitted. ``tasks``: the array tasks submitted
    (empty when every shard was done: then only the merge job runs)."""

    tasks: tuple[int, ...]
    commands: tuple[tuple[str, ...], ...]
    array_job_id: Optional[str] = None
    merge_job_id: Optional[str] = None

    @property
    def command_lines(self) -> list[str]:
        return [" ".join(shlex.quote(w) for w in c) for c in self.commands]


def task_ranges(tasks: Sequence[int]) -> str:
    """Slurm's ``--array`` spelling of task ids: ``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``."""
    ids = sorted(set(tasks))
    if not ids:
        raise ValueError("no array tasks")
    spans, start, prev = [], ids[0], ids[0]
    for cur in ids[1:]:
        if cur != prev + 1:
            spans.append((start, prev))
            start = cur
        prev = cur
    spans.append((start, prev))
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _array_spec(tasks: Sequence[int], max_running: Optional[int]) -> str:
    return task_ranges(tasks) + (f"%{max_running}" if max_running else "")


def render_predict_jobs(plan: BatchPlan, out: str | Path, options: PredictJobOptions = PredictJobOptions()
                        ) -> PredictJobs:
    """Check ``options`` and render both scripts for ``plan`` in the folder ``out``."""
    batch = BatchDir(Path(out).absolute())
    time = _sbatch_value("--time", options.time)
    if not _TIME.match(time):
        raise HpcError(f"--time {time!r}: expected a Slurm time limit such as 30, 04:00:00 or 2-00:00:00")
    mem = _sbatch_value("--mem", options.mem)
    if mem is not None and not _MEM.match(mem):
        raise HpcError(f"--mem {mem!r}: expected memory per node such as 16G or 32000M")
    if options.cpus_per_task < 1:
        raise HpcError(f"--cpus-per-task must be at least 1, got {options.cpus_per_task}")
    if options.gpus_per_node < 0:
        raise HpcError(f"--gpus-per-node must be 0 or more, got {options.gpus_per_node}")
    if options.max_running is not None and options.max_running < 1:
        raise HpcError(f"--max-running must be at least 1, got {options.max_running}")
    _sbatch_value("--out", str(batch.root))  # it is in the #SBATCH --output line too
    log_dir = Path(_sbatch_value("--log-dir", options.log_dir) or batch.logs).absolute()
    activate = _one_line("--activate", options.activate)
    activate = activate.strip() if activate and activate.strip() else None
    pneumo = _words("--pneumo", options.pneumo or default_pneumo(activate))
    job_name = _sbatch_value("--job-name", options.job_name)
    common = dict(
        artifact=plan.artifact, source=plan.source, name=f"{plan.model} on {Path(plan.source).name}",
        partition=_sbatch_value("--partition", options.partition), account=_sbatch_value("--account", options.account),
        qos=_sbatch_value("--qos", options.qos), time=time, nodes=1, gpus_per_node=options.gpus_per_node, mem=mem,
        requeue=options.requeue, extra_sbatch=[_extra_line(line) for line in options.extra_sbatch],
        activate=activate, log_dir=str(log_dir), out=str(batch.root), shards=plan.shards, n_inputs=len(plan.inputs),
        shards_dir=str(batch.shards), plan_file=str(batch.plan), merge_script=str(batch.root / MERGE_SCRIPT),
        backend=plan.backend, batch_size=plan.batch_size, site=plan.site,
        pneumo=[shlex.quote(w) for w in pneumo], literal_dollar=any(c in str(batch.root) for c in "$`"),
        pneumo_dollar=any(c in w for w in pneumo for c in "$`"))
    env = _environment()
    array = env.get_template("predict-array.sbatch.j2").render(
        **common, template="array", kind_title="batch prediction (array job)", job_name=job_name,
        cpus_per_task=options.cpus_per_task, omp_threads=options.cpus_per_task,
        output=str(log_dir / "%x-%A_%a.out"), array=_array_spec(range(plan.shards), options.max_running),
        max_running=options.max_running)
    merge_name = _sbatch_value("--job-name", f"{job_name}-merge")
    merge = env.get_template("predict-merge.sbatch.j2").render(
        **{**common, "gpus_per_node": 0}, template="merge", kind_title="batch prediction merge job",
        job_name=merge_name, cpus_per_task=1, omp_threads=1, output=str(log_dir / "%x-%j.out"))
    return PredictJobs(batch, plan.shards, array, merge, log_dir, job_name, options.max_running)


def write_predict_jobs(jobs: PredictJobs) -> None:
    """Write both scripts into the batch folder and create the log folder (Slurm does not)."""
    try:
        jobs.log_dir.mkdir(parents=True, exist_ok=True)
        jobs.array_path.write_text(jobs.array_script, encoding="utf-8")
        jobs.merge_path.write_text(jobs.merge_script, encoding="utf-8")
    except OSError as exc:
        raise HpcError(f"cannot write the batch scripts in {jobs.batch.root}: {exc}") from None


def submit_predict_jobs(jobs: PredictJobs, tasks: Sequence[int], dry_run: bool = False,
                        sbatch: str = "sbatch") -> PredictSubmission:
    """Write both scripts and create the log folder, submit the array job for ``tasks`` (the
    shards that are not done; none: no array job) and the merge job after it. A dry run writes
    and submits nothing and returns the commands with ``<array job id>`` in place of the id."""
    tasks = tuple(sorted(set(tasks)))
    if any(not 0 <= t < jobs.shards for t in tasks):
        raise HpcError(f"array tasks {list(tasks)} outside 0..{jobs.shards - 1}")
    array_cmd = (sbatch, "--parsable", f"--array={_array_spec(tasks, jobs.max_running)}", str(jobs.array_path)) \
        if tasks else None

    def merge_cmd(array_id: Optional[str]) -> tuple[str, ...]:
        dependency = (f"--dependency=afterany:{array_id}",) if array_id else ()
        return (sbatch, "--parsable", *dependency, str(jobs.merge_path))

    if dry_run:
        commands = (array_cmd, merge_cmd("<array job id>")) if array_cmd else (merge_cmd(None),)
        return PredictSubmission(tasks, commands)
    write_predict_jobs(jobs)
    array_id = run_sbatch(array_cmd, jobs.array_path) if array_cmd else None
    merge = merge_cmd(array_id)
    try:
        merge_id = run_sbatch(merge, jobs.merge_path)
    except HpcError as exc:
        if array_id is None:
            raise
        raise HpcError(f"{exc}; the array job {array_id} was submitted: submit the merge yourself with "
                       f"`sbatch --dependency=afterany:{array_id} {jobs.merge_path}`") from None
    return PredictSubmission(tasks, (array_cmd, merge) if array_cmd else (merge,), array_id, merge_id)
