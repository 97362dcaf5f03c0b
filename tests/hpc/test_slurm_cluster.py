"""The one-node test cluster runs jobs, arrays, and preemption-style requeues.

These prove the mechanisms pneumo's job templates rely on work on the cluster
that ``.ci/slurm/start.sh`` builds; they use only sbatch/scontrol/scancel.
"""

from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm


def _wait_for_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.25)
    return path.exists()


def test_batch_job_runs_and_writes_its_file(slurm_cluster, tmp_path):
    out = tmp_path / "hello.txt"
    job = slurm_cluster.sbatch("--wrap", 'echo hello > "$OUTFILE"', cwd=tmp_path, env={"OUTFILE": str(out)})

    assert slurm_cluster.wait_for_job(job, timeout=60) == "COMPLETED"
    assert out.read_text().strip() == "hello"


def test_array_job_runs_every_task(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch(
        "--array=0-1",
        "--output=slurm-%A_%a.out",
        "--wrap",
        f'echo "$SLURM_ARRAY_TASK_ID" > {tmp_path}/task-"$SLURM_ARRAY_TASK_ID".txt',
        cwd=tmp_path,
    )

    assert slurm_cluster.wait_for_job(job, timeout=60) == "COMPLETED"
    assert sorted(slurm_cluster.job_states(job)) == [f"{job}_0", f"{job}_1"]
    for task in (0, 1):
        assert (tmp_path / f"task-{task}.txt").read_text().strip() == str(task)


REQUEUE_SCRIPT = """\
#!/bin/bash
#SBATCH --job-name=requeue-probe
#SBATCH --requeue
#SBATCH --signal=B:USR1@60
#SBATCH --time=00:10:00
#SBATCH --output={dir}/job-%j.out
#SBATCH --open-mode=append
# Second run (after the requeue): finish.
echo "run: restart=${{SLURM_RESTART_COUNT:-0}} $(date +%T)"
if [ "${{SLURM_RESTART_COUNT:-0}}" -ge 1 ] || [ -f {dir}/marker ]; then
    echo "done restart=${{SLURM_RESTART_COUNT:-0}}" > {dir}/done
    exit 0
fi
# First run: on the preemption warning, leave a marker and requeue ourselves.
on_usr1() {{
    echo "USR1 $(date +%T)"
    echo "$SLURM_JOB_ID" > {dir}/marker
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
}}
trap on_usr1 USR1
echo started > {dir}/started
# bash runs traps only between commands: wait on a background sleep.
sleep 300 &
wait $!
"""


def test_signal_then_self_requeue_completes_on_second_run(slurm_cluster, tmp_path):
    script = tmp_path / "requeue.sbatch"
    script.write_text(textwrap.dedent(REQUEUE_SCRIPT.format(dir=tmp_path)))
    job = slurm_cluster.sbatch(str(script), cwd=tmp_path)

    slurm_cluster.wait_for_state(job, {"RUNNING"}, timeout=30)
    assert _wait_for_file(tmp_path / "started", timeout=30), "job never installed its USR1 trap"
    # What Slurm sends ahead of preemption or the time limit (--signal=B:USR1@...).
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=20)

    state = slurm_cluster.wait_for_job(job, timeout=90)
    outputs = "\n".join(p.read_text() for p in tmp_path.glob("job-*.out"))
    assert state == "COMPLETED", outputs
    assert (tmp_path / "marker").exists(), outputs
    assert (tmp_path / "done").read_text().strip() == "done restart=1", outputs
    assert slurm_cluster.requeue_count(job) >= 1
