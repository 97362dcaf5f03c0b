"""Run rendered batch scripts with bash, outside Slurm, against fake pneumo/torchrun/srun/scontrol.

These pin down what each script does at run time (argument quoting, signal forwarding, requeue
decisions, the array task's overrides, the multi-node rendezvous) in a second, without a cluster.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import REPO, require
from pneumo_core.cli.main import main

SMOKE = str(REPO / "configs" / "smoke.yaml")

# A stand-in for `pneumo`/`torchrun`: records its arguments (one per line), then behaves as
# FAKE_MODE says: "ok" exits 0, "fail" exits 3, "wait" waits for a signal and records it.
FAKE_TRAINER = r"""#!/bin/bash
name="$(basename "$0")"
printf '%s\n' "$@" > "$FAKE_DIR/$name.args"
on_signal() {
    echo "$1" >> "$FAKE_DIR/$name.signals"
    exit "${FAKE_SIGNAL_RC:-75}"
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM
case "${FAKE_MODE:-ok}" in
    ok) exit 0 ;;
    fail) exit 3 ;;
esac
touch "$FAKE_DIR/$name.ready"
for _ in $(seq 1 300); do sleep 0.1; done
exit 99
"""

# scontrol: `show hostnames` prints FAKE_NODES (or the file FAKE_NODES_FILE); everything else is logged.
FAKE_SCONTROL = r"""#!/bin/bash
if [ "$1 $2" = "show hostnames" ]; then
    if [ -n "${FAKE_NODES_FILE:-}" ]; then exec cat "$FAKE_NODES_FILE"; else printf '%s\n' $FAKE_NODES; fi
    exit 0
fi
echo "$*" >> "$FAKE_DIR/scontrol.calls"
"""

# srun/scancel: log the call; srun then runs its command (after the srun options).
FAKE_SRUN = r"""#!/bin/bash
printf '%s\n' "$@" > "$FAKE_DIR/srun.args"
while [ "$#" -gt 0 ] && [ "${1#--}" != "$1" ]; do shift; done
exec "$@"
"""
FAKE_SCANCEL = r"""#!/bin/bash
echo "$*" >> "$FAKE_DIR/scancel.calls"
kill -s "${1#--signal=}" "$(cat "$FAKE_DIR/torchrun.pid")"
"""


@pytest.fixture
def fakes(tmp_path):
    require(shutil.which("bash") is not None, "bash not installed")
    bin_dir = tmp_path / "fake bin"
    bin_dir.mkdir()
    for name, text in (("pneumo", FAKE_TRAINER), ("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN),
                       ("scancel", FAKE_SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    # torchrun: the same fake, but it records its pid so the fake scancel can signal it
    (bin_dir / "torchrun").write_text(FAKE_TRAINER.replace('name="$(basename "$0")"',
                                                           'name="$(basename "$0")"\necho $$ > "$FAKE_DIR/$name.pid"'))
    (bin_dir / "torchrun").chmod(0o755)
    return bin_dir


class Job:
    def __init__(self, tmp_path: Path, bin_dir: Path, script: str, **env: str):
        self.dir = tmp_path
        self.path = tmp_path / "job.sbatch"
        self.path.write_text(script)
        self.env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_DIR": str(tmp_path),
            "SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "node[1-2]",
            "SLURM_NNODES": "1", "FAKE_NODES": "node1 node2", **env}

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(["bash", str(self.path)], cwd="/", env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def run(self) -> tuple[int, str]:
        proc = self.start()
        out, _ = proc.communicate(timeout=60)
        return proc.returncode, out

    def args(self, name: str = "pneumo") -> list[str]:
        return (self.dir / f"{name}.args").read_text().splitlines()

    def read(self, name: str) -> str:
        path = self.dir / name
        return path.read_text() if path.exists() else ""

    def wait_ready(self, proc: subprocess.Popen, name: str = "pneumo", timeout: float = 20) -> None:
        """Wait until the fake ``name`` runs; fail at once, with the job's output, if the job ends first."""
        deadline = time.monotonic() + timeout
        while not (self.dir / f"{name}.ready").exists():
            if proc.poll() is not None:
                out, _ = proc.communicate()
                pytest.fail(f"the job exited {proc.returncode} before {name} started:\n{out}")
            if time.monotonic() >= deadline:
                proc.kill()
                out, _ = proc.communicate()
                pytest.fail(f"{name} never started in {timeout:g}s; the job printed:\n{out}")
            time.sleep(0.05)


def rendered(capsys, *args: str) -> str:
    assert main(["hpc", "render", *args]) == 0
    return capsys.readouterr().out


def test_arguments_survive_quoting(capsys, tmp_path, fakes):
    run_dir = "my runs/it's $HOME `x`"
    odd = "serve.api_key_env=A 'B' \"C\" $D `e` \\f"
    script = rendered(capsys, SMOKE, "--pneumo", shlex.quote(str(fakes / "pneumo")), "--run-dir", run_dir, "--set", odd,
                      "--set", "train.epochs=1")
    job = Job(tmp_path, fakes, script)
    code, out = job.run()
    assert code == 0, out
    assert job.args() == ["train", SMOKE, "--run-dir", run_dir, "--no-progress", "--set", odd,
                          "--set", "train.epochs=1"]
    assert "training finished" in out


def test_usr1_checkpoints_and_requeues(capsys, tmp_path, fakes):
    script = rendered(capsys, SMOKE, "--pneumo", shlex.quote(str(fakes / "pneumo")))
    job = Job(tmp_path, fakes, script, FAKE_MODE="wait")
    proc = job.start()
    job.wait_ready(proc)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert job.read("pneumo.signals").split() == ["USR1"]  # forwarded as USR1
    assert job.read("scontrol.calls").splitlines() == ["requeue 77"]
    assert "trainer saved a checkpoint and stopped (exit 75) after SIGUSR1; requeueing job 77" in out


def test_term_checkpoints_but_does_not_requeue(capsys, tmp_path, fakes):
    """scancel sends TERM: the trainer saves a checkpoint, and the job must stay cancelled."""
    script = rendered(capsys, SMOKE, "--pneumo", shlex.quote(str(fakes / "pneumo")))
    job = Job(tmp_path, fakes, script, FAKE_MODE="wait")
    proc = job.start()
    job.wait_ready(proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 75, out
    assert job.read("pneumo.signals").split() == ["TERM"]
    assert job.read("scontrol.calls") == ""
    assert "not requeued" in out


def test_trainer_killed_by_the_signal_still_requeues(capsys, tmp_path, fakes):
    """A USR1 that comes before the trainer set its handlers kills it: resume from the last checkpoint."""
    script = rendered(capsys, SMOKE, "--pneumo", shlex.quote(str(fakes / "pneumo")))
    job = Job(tmp_path, fakes, script, FAKE_MODE="wait", FAKE_SIGNAL_RC="138")
    proc = job.start()
    job.wait_ready(proc)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "trainer stopped (exit 138) after SIGUSR1; requeueing job 77" in out
    assert job.read("scontrol.calls").splitlines() == ["requeue 77"]


def test_no_requeue_ends_with_75(capsys, tmp_path, fakes):
    script = rendered(capsys, SMOKE, "--pneumo", shlex.quote(str(fakes / "pneumo")), "--no-requeue")
    job = Job(tmp_path, fakes, script, FAKE_MODE="wait")
    proc = job.start()
    job.wait_ready(proc)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 75, out
    assert job.read("scontrol.calls") == ""


def test_failures_propagate(capsys, tmp_path, fakes):
    script = rendered(capsys, SMOKE, "--pneumo", shlex.quote(str(fakes / "pneumo")))
    code, out = Job(tmp_path, fakes, script, FAKE_MODE="fail").run()
    assert code == 3, out
    assert "trainer failed with exit code 3" in out
    assert not (tmp_path / "scontrol.calls").exists()


def test_torchrun_gets_term_and_its_failure_after_usr1_still_requeues(capsys, tmp_path, fakes):
    script = rendered(capsys, SMOKE, "--pneumo", shlex.quote(str(fakes / "pneumo")),
                      "--torchrun", shlex.quote(str(fakes / "torchrun")), "--gpus-per-node", "2")
    # torchrun exits 1 (not 75) when its workers stop on a signal
    job = Job(tmp_path, fakes, script, FAKE_MODE="wait", FAKE_SIGNAL_RC="1")
    proc = job.start()
    job.wait_ready(proc, "torchrun")
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert job.read("torchrun.signals").split() == ["TERM"]
    assert job.read("scontrol.calls").splitlines() == ["requeue 77"]
    assert job.args("torchrun")[:4] == ["--standalone", "--nnodes=1", "--nproc_per_node=2", "--no-python"]
    assert job.args("torchrun")[4:7] == [str(fakes / "pneumo"), "train", SMOKE]


def test_multi_node_rendezvous_and_signal_via_scancel(capsys, tmp_path, fakes):
    script = rendered(capsys, SMOKE, "--nodes", "2", "--gpus-per-node", "4", "--pneumo", "pneumo",
                      "--torchrun", shlex.quote(str(fakes / "torchrun")))
    job = Job(tmp_path, fakes, script, FAKE_MODE="wait", FAKE_SIGNAL_RC="1", SLURM_NNODES="2")
    proc = job.start()
    job.wait_ready(proc, "torchrun")
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert job.args("srun")[:4] == ["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=2",
                                    "--kill-on-bad-exit=1"]
    assert job.args("torchrun")[:5] == ["--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d",
                                        "--rdzv_endpoint=node1:29500", "--rdzv_id=77"]
    assert job.read("scancel.calls").splitlines() == ["--signal=TERM 77"]
    assert job.read("torchrun.signals").split() == ["TERM"]
    assert job.read("scontrol.calls").splitlines() == ["requeue 77"]


def test_multi_node_head_node_from_a_long_node_list(capsys, tmp_path, fakes):
    """A node list longer than a pipe buffer: the first node is the rendezvous host, and no SIGPIPE kills the job."""
    script = rendered(capsys, SMOKE, "--nodes", "2", "--pneumo", "pneumo", "--torchrun", shlex.quote(str(fakes / "torchrun")))
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("".join(f"node{i:05d}\n" for i in range(20000)))  # 200 kB, over the 64 kB pipe buffer
    job = Job(tmp_path, fakes, script, SLURM_NNODES="2", FAKE_NODES_FILE=str(nodes))
    code, out = job.run()
    assert code == 0, out
    assert "--rdzv_endpoint=node00000:29500" in job.args("torchrun")
    assert "rendezvous: node00000:29500" in out


def test_multi_node_without_hostnames_fails_clearly(capsys, tmp_path, fakes):
    script = rendered(capsys, SMOKE, "--nodes", "2", "--pneumo", "pneumo", "--torchrun", shlex.quote(str(fakes / "torchrun")))
    code, out = Job(tmp_path, fakes, script, SLURM_NNODES="2", FAKE_NODES="").run()
    assert code == 1, out
    assert "returned no node" in out
    assert not (tmp_path / "torchrun.args").exists()


@pytest.mark.parametrize("task, expected", [("0", ["--set", "train.lr=0.001"]),
                                            ("1", ["--set", "train.lr=0.003", "--set", "train.seed=1"])])
def test_array_task_picks_its_overrides_and_run_dir(task, expected, capsys, tmp_path, fakes):
    script = rendered(capsys, SMOKE, "--pneumo", shlex.quote(str(fakes / "pneumo")), "--array",
                      "--set", "hpc.sweep=[[train.lr=0.001], [train.lr=0.003, train.seed=1]]")
    job = Job(tmp_path, fakes, script, SLURM_ARRAY_TASK_ID=task)
    code, out = job.run()
    assert code == 0, out
    args = job.args()
    assert args[2:4] == ["--run-dir", f"runs/smoke/sweep-{task}"]
    assert args[-len(expected):] == expected

    code, out = Job(tmp_path, fakes, script, SLURM_ARRAY_TASK_ID="2").run()
    assert code == 2 and "no hpc.sweep entry" in out
    code, out = Job(tmp_path, fakes, script).run()
    assert code != 0 and "submit this script as an array job" in out


def test_activation_line_runs_before_the_trainer(capsys, tmp_path, fakes):
    (tmp_path / "env.sh").write_text('export ACTIVATED=yes\necho "activated ${UNSET_VARIABLE}"\n')
    script = rendered(capsys, SMOKE, "--activate", "source env.sh", "--pneumo", shlex.quote(str(fakes / "pneumo")))
    code, out = Job(tmp_path, fakes, script).run()
    assert code == 0, out
    assert "activated" in out
