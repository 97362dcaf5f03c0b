"""pneumo's own batch scripts on the one-node Slurm cluster: train, preempt/requeue, sweep, DDP.

Each job trains the smoke config on a few tiny synthetic images, so that it takes seconds;
every wait is bounded. The cluster's node has 2 CPUs: jobs ask for at most that, and 1-2 GB.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from harness import REPO, free_port
from pneumo_core.artifact import load_artifact

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SMOKE = str(REPO / "configs" / "smoke.yaml")
TINY = ["--set", "data.params.n_train=64", "--set", "data.params.n_val=32", "--set", "data.params.n_test=0",
        "--set", "data.params.size=32", "--set", "data.image_size=32", "--set", "train.bootstrap=20",
        "--set", "train.precision=fp32"]
JOB_TIMEOUT_S = 180


def submit(cluster, cwd: Path, *args: str) -> str:
    """``pneumo hpc submit SMOKE TINY ARGS`` from ``cwd``; returns the job id."""
    return cluster.pneumo(cwd, "hpc", "submit", SMOKE, *TINY, *args)[0]


def logs(cwd: Path) -> str:
    return "\n".join(f"----- {p.name} -----\n{p.read_text(errors='replace')}"
                     for p in sorted((cwd / "runs").glob("*.out")))


def wait_done(cluster, job_id: str, cwd: Path, timeout: float = JOB_TIMEOUT_S) -> None:
    try:
        state = cluster.wait_for_job(job_id, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(cwd)}") from None
    assert state == "COMPLETED", logs(cwd)


def wait_for_file(path: Path, timeout: float, cluster, job_id: str, cwd: Path) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} not written after {timeout:g}s; job state "
                                 f"{cluster.job_state(job_id)}\n{logs(cwd)}")
        time.sleep(0.25)


def training(artifact: Path) -> dict:
    load_artifact(artifact)  # verifies hashes and weights
    return json.loads((artifact / "model.json").read_text())


def test_submitted_job_trains_an_artifact(slurm_cluster, tmp_path):
    job = submit(slurm_cluster, tmp_path, "--set", "train.epochs=1", "--cpus-per-task", "1", "--mem", "1G",
                 "--job-name", "pneumo-single")
    wait_done(slurm_cluster, job, tmp_path)
    meta = training(tmp_path / "runs" / "smoke" / "artifact")
    assert meta["training"]["epochs_run"] == 1 and meta["training"]["world_size"] == 1
    assert (tmp_path / "runs" / "smoke" / "single.sbatch").is_file()
    log = (tmp_path / "runs" / f"pneumo-single-{job}.out").read_text()
    assert "training finished" in log


def usr1_mid_training(slurm_cluster, job: str, tmp_path: Path) -> None:
    """Send the batch shell what Slurm sends signal_seconds before the time limit
    (--signal=B:USR1@...), once the trainer is mid-run with its handlers installed
    (metrics.csv appears after the first epoch)."""
    slurm_cluster.wait_for_state(job, {"RUNNING"}, timeout=60)
    wait_for_file(tmp_path / "runs" / "smoke" / "metrics.csv", 120, slurm_cluster, job, tmp_path)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=20,
                   env={**os.environ, **slurm_cluster.env})


def test_usr1_checkpoints_requeues_and_resumes(slurm_cluster, tmp_path):
    epochs = 12
    job = submit(slurm_cluster, tmp_path, "--set", f"train.epochs={epochs}", "--set", "train.batch_size=16",
                 "--cpus-per-task", "1", "--mem", "1G", "--job-name", "pneumo-preempt")
    usr1_mid_training(slurm_cluster, job, tmp_path)

    wait_done(slurm_cluster, job, tmp_path)
    log = logs(tmp_path)
    assert "caught SIGUSR1" in log
    assert "trainer saved a checkpoint and stopped (exit 75) after SIGUSR1; requeueing job" in log
    assert "resuming from checkpoint" in log and "(restart 1)" in log
    assert slurm_cluster.requeue_count(job) >= 1
    meta = training(tmp_path / "runs" / "smoke" / "artifact")
    assert meta["training"]["epochs_run"] == epochs


def test_array_job_runs_the_sweep(slurm_cluster, tmp_path):
    job = submit(slurm_cluster, tmp_path, "--set", "train.epochs=1",
                 "--set", "hpc.sweep=[[train.lr=0.001], [train.lr=0.003]]", "--array",
                 "--cpus-per-task", "1", "--mem", "1G", "--job-name", "pneumo-sweep")
    wait_done(slurm_cluster, job, tmp_path)
    assert sorted(slurm_cluster.job_states(job)) == [f"{job}_0", f"{job}_1"]
    lrs = [training(tmp_path / "runs" / "smoke" / f"sweep-{task}" / "artifact")["config"]["train"]["lr"]
           for task in (0, 1)]
    assert lrs == [0.001, 0.003]


def test_cpu_ddp_job_launched_like_multi_node(slurm_cluster, tmp_path):
    """The multi-node launch (srun, then torchrun with a c10d rendezvous) with 2 CPU processes."""
    job = submit(slurm_cluster, tmp_path, "--set", "train.epochs=1", "--set", "train.batch_size=16",
                 "--template", "multi", "--nodes", "1", "--procs-per-node", "2", "--cpus-per-task", "2",
                 "--mem", "2G", "--rdzv-port", str(free_port()), "--job-name", "pneumo-ddp")
    wait_done(slurm_cluster, job, tmp_path)
    assert "--rdzv_backend=c10d" in logs(tmp_path)
    meta = training(tmp_path / "runs" / "smoke" / "artifact")
    assert meta["training"]["world_size"] == 2


def test_cpu_ddp_job_requeues_after_usr1(slurm_cluster, tmp_path):
    """The srun path: USR1 reaches the batch shell, scancel --signal=TERM stops torchrun and its workers."""
    epochs = 6
    job = submit(slurm_cluster, tmp_path, "--set", f"train.epochs={epochs}", "--set", "train.batch_size=16",
                 "--template", "multi", "--nodes", "1", "--procs-per-node", "2", "--cpus-per-task", "2",
                 "--mem", "2G", "--rdzv-port", str(free_port()), "--job-name", "pneumo-ddp-preempt")
    usr1_mid_training(slurm_cluster, job, tmp_path)

    wait_done(slurm_cluster, job, tmp_path)
    log = logs(tmp_path)
    assert "after SIGUSR1; requeueing job" in log and "resuming from checkpoint" in log
    assert slurm_cluster.requeue_count(job) >= 1
    meta = training(tmp_path / "runs" / "smoke" / "artifact")
    assert meta["training"]["world_size"] == 2 and meta["training"]["epochs_run"] == epochs
