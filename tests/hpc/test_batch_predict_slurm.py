"""`pneumo hpc predict` on the one-node Slurm cluster: a few hundred small images, an array of 4
tasks, the merge job after it, and a resubmission that runs only the shard that is not done;
then failing tasks, after which the merge job still runs and names the missing shards.

The node has 2 CPUs: each task asks for 1 CPU and 1 GB, so two run at once.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from hpc.batch.rows import ShardRow
from plugins.datasets.synthetic.phantom import render_phantom

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

N_IMAGES, SHARDS, SIZE = 240, 4, 64
JOB_TIMEOUT_S = 150


def write_xrays(folder: Path, count: int) -> list[str]:
    for i in range(count):
        path = folder / f"series{i % 3}" / f"img{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_phantom(i % 2, SIZE, i)).save(path)
    return sorted(str(p) for p in folder.rglob("*.png"))


def submit(cluster, cwd: Path, artifact: Path, folder: Path, out: Path, *args: str,
           shards: int = SHARDS) -> tuple[str | None, str, str]:
    """``pneumo hpc predict`` from ``cwd``: (array job id or None, merge job id, its stderr)."""
    merge_id, err = cluster.pneumo(cwd, "hpc", "predict", str(artifact), str(folder), "--array", str(shards),
                                   "--out", str(out), "--cpus-per-task", "1", "--mem", "1G", "--time", "00:10:00",
                                   "--job-name", "pneumo-batch", *args)
    array = re.search(r"submitted array job (\d+)", err)
    return (array.group(1) if array else None), merge_id, err


def logs(out: Path) -> str:
    return "\n".join(f"----- {p.name} -----\n{p.read_text(errors='replace')}" for p in sorted((out / "logs").glob("*")))


def wait_done(cluster, job_id: str, out: Path, state: str = "COMPLETED") -> None:
    try:
        cluster.wait_for_job(job_id, states={state}, timeout=JOB_TIMEOUT_S)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(out)}") from None


def shard_files(out: Path) -> list[Path]:
    return [out / "shards" / f"shard-{i:05d}-of-{SHARDS:05d}.jsonl" for i in range(SHARDS)]


def test_array_job_scores_shards_merges_and_resumes(slurm_cluster, smoke_artifact, tmp_path):
    folder = tmp_path / "xrays"
    images = write_xrays(folder, N_IMAGES)
    out = tmp_path / "batch"

    array_id, merge_id, _ = submit(slurm_cluster, tmp_path, smoke_artifact, folder, out)
    assert array_id is not None
    wait_done(slurm_cluster, merge_id, out)
    assert slurm_cluster.job_states(array_id) == {f"{array_id}_{i}": "COMPLETED" for i in range(SHARDS)}

    shard_rows = [[ShardRow.model_validate_json(line) for line in p.read_text().splitlines()]
                  for p in shard_files(out)]
    assert [len(rows) for rows in shard_rows] == [N_IMAGES // SHARDS] * SHARDS
    flat = [row for rows in shard_rows for row in rows]
    assert [row.path for row in flat] == images and all(row.result is not None for row in flat)
    with open(out / "predictions.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == N_IMAGES
    assert [(r["path"], r["label"], float(r["probability"])) for r in table] == \
        [(row.path, row.result.label, row.result.probability) for row in flat]
    task_logs = logs(out)
    for i in range(SHARDS):
        assert f"shard {i} finished" in task_logs
    assert "merged: " in task_logs

    # Resubmission after losing one shard: only its task runs; the others are left as they are.
    mtimes = [p.stat().st_mtime_ns for p in shard_files(out)]
    before = {r["path"]: float(r["probability"]) for r in table}
    lost = shard_files(out)[2]
    lost.unlink()
    array_id, merge_id, stderr = submit(slurm_cluster, tmp_path, smoke_artifact, folder, out)
    assert f"{SHARDS - 1} already done, skipped; tasks 2 to run" in stderr
    wait_done(slurm_cluster, merge_id, out)
    assert slurm_cluster.job_states(array_id) == {f"{array_id}_2": "COMPLETED"}
    assert [p.stat().st_mtime_ns for i, p in enumerate(shard_files(out)) if i != 2] == \
        [m for i, m in enumerate(mtimes) if i != 2]
    assert lost.is_file()
    with open(out / "predictions.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["path"] for r in table] == images
    # the rescored shard may run on another backend (auto measures on each run): within its tolerance
    assert all(abs(float(r["probability"]) - before[r["path"]]) <= 0.02 for r in table)


def test_failed_tasks_still_let_the_merge_run_and_name_the_missing_shards(slurm_cluster, smoke_artifact, tmp_path):
    from pneumo_core.artifact import load_artifact
    from pneumo_core.artifact.store import update_metadata

    artifact = tmp_path / "model"
    shutil.copytree(smoke_artifact, artifact)
    folder, out = tmp_path / "xrays", tmp_path / "batch"
    write_xrays(folder, 8)
    # held, so that the artifact can change between planning and the tasks: they must refuse it
    array_id, merge_id, _ = submit(slurm_cluster, tmp_path, artifact, folder, out, "--sbatch=--hold", shards=2)
    update_metadata(load_artifact(artifact), "threshold", 0.3)
    subprocess.run(["scontrol", "release", f"{array_id},{merge_id}"], check=True, timeout=20,
                   env={**os.environ, **slurm_cluster.env})

    wait_done(slurm_cluster, merge_id, out, state="FAILED")
    assert set(slurm_cluster.job_states(array_id).values()) == {"FAILED"}
    task_logs = logs(out)
    assert task_logs.count("changed since this batch was planned") == 2
    assert "2 of 2 shards of" in task_logs and "shard 0 (" in task_logs and "shard 1 (" in task_logs
    assert "Submit the same `pneumo hpc predict` command again" in task_logs
    assert not (out / "predictions.csv").exists()
