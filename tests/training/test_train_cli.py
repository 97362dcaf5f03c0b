"""``pneumo train``: artifacts, interruption (SIGKILL, SIGTERM/SIGUSR1), resume, and DDP parity."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from harness import REPO, run_cli
from pneumo_core.artifact import load_artifact
from pneumo_core.training import EXIT_PREEMPTED

SMALL = ["--set", "data.params.n_train=96", "--set", "data.params.n_val=32", "--set", "data.params.n_test=32",
         "--set", "train.bootstrap=20", "--set", "train.batch_size=16", "--no-progress"]


def _train_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pneumo_core.cli.main", "train", str(REPO / "configs" / "smoke.yaml"),
            "--run-dir", str(run_dir), *SMALL, *extra]


def _epochs_logged(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with path.open() as fh:
        return [int(r["epoch"]) for r in csv.DictReader(fh)]


class _Stderr:
    """Collects a process's stderr lines on a thread, so a test can wait for one."""

    def __init__(self, proc: subprocess.Popen) -> None:
        import threading

        self.proc, self.lines = proc, []
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        self._thread.start()

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)):
            assert self.proc.poll() is None or any(text in line for line in list(self.lines)), \
                f"trainer exited before printing {text!r}: {''.join(self.lines)[-2000:]}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s: {''.join(self.lines)[-2000:]}"
            time.sleep(0.02)

    def text(self) -> str:
        self._thread.join(60)
        return "".join(self.lines)


def _every_step() -> dict:
    """Environment for a trainer that prints a progress line after every step (no terminal)."""
    return {**os.environ, "PNEUMO_PROGRESS_EVERY_S": "0"}


def _wait_for(cond, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"trainer exited early: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the trainer"
        time.sleep(0.05)


def test_smoke_training_writes_a_complete_artifact(tmp_path):
    out = subprocess.run(_train_cmd(tmp_path / "run"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    art_dir = tmp_path / "run" / "artifact"
    assert out.stdout.strip() == f"artifact: {art_dir}"
    for name in ("model.safetensors", "model.json", "SHA256SUMS", "report.md", "val_roc.png", "val_pr.png",
                 "val_confusion.png", "val_reliability.png", "test_roc.png", "learning_curves.png"):
        assert (art_dir / name).is_file(), name
    meta = json.loads((art_dir / "model.json").read_text())
    assert meta["model"]["name"] == "resnet18" and meta["classes"] == ["NORMAL", "PNEUMONIA"]
    assert 0 < meta["threshold"] < 1 and meta["calibration"]["temperature"] > 0
    assert set(meta["metrics"]) == {"val", "test"}
    for key in ("auc", "auc_ci_low", "auc_ci_high", "sensitivity", "specificity", "ppv", "npv", "f1", "brier", "ece"):
        assert key in meta["metrics"]["test"]
    assert len(meta["data"]["fingerprint"]) == 64 and meta["versions"]["torch"]
    assert meta["config"]["train"]["epochs"] == 3
    assert _epochs_logged(tmp_path / "run") == [1, 2, 3]
    report = (art_dir / "report.md").read_text()
    assert "Not for clinical use" in report and "ROC AUC" in report
    load_artifact(art_dir)  # verifies checksums
    stamp = (art_dir / "model.safetensors").stat().st_mtime_ns
    again = subprocess.run(_train_cmd(tmp_path / "run"), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "run already finished" in again.stderr, again.stderr
    assert (art_dir / "model.safetensors").stat().st_mtime_ns == stamp, "a finished run is not retrained"
    changed = subprocess.run(_train_cmd(tmp_path / "run", "--set", "train.lr=0.1"), capture_output=True, text=True,
                             timeout=120)
    assert changed.returncode == 2 and "different config" in changed.stderr


def test_temporal_split_chooses_epoch_temperature_and_threshold_with_ema(tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run(_train_cmd(run_dir, "--set", "data.temporal_fraction=0.2", "--set", "data.select_on=temporal",
                                    "--set", "train.ema_decay=0.9"),
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PNEUMO_PROGRESS_EVERY_S": "0"})
    assert out.returncode == 0, out.stderr
    # not a terminal: a start-up summary and progress lines instead of bars
    assert "pneumo train: resnet18 at 64 px on cpu (" in out.stderr and "native bf16:" in out.stderr
    from pneumo_core.device import cpu_vector_units
    assert f", {cpu_vector_units()}, " in out.stderr, "the summary names the CPU's vector units"
    assert "images: train " in out.stderr and "temporal " in out.stderr and "steps of 16 per epoch" in out.stderr
    assert "epoch 1/3 step 1/" in out.stderr and "img/s, epoch ends in" in out.stderr
    meta = json.loads((run_dir / "artifact" / "model.json").read_text())
    assert meta["selected_on"] == "temporal"
    assert set(meta["metrics"]) == {"temporal", "val", "test"}
    assert meta["data"]["counts"]["temporal"] == meta["metrics"]["temporal"]["n"] > 0
    history = meta["training"]["history"]
    assert all("temporal_auc" in h and "val_auc" in h for h in history)
    best = max(history, key=lambda h: h["temporal_auc"])  # first of equal maxima, as training keeps
    assert meta["training"]["best_epoch"] == best["epoch"]
    assert meta["training"]["ema_decay"] == 0.9
    report = (run_dir / "artifact" / "report.md").read_text()
    assert "chosen on the `temporal` split" in report and "fitted on the `temporal` split" in report
    assert "best epoch" in report and "ROC AUC on the `temporal` split" in report
    # the artifact holds the averaged weights of the best epoch, not the raw ones
    import torch

    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    weights = load_file(str(run_dir / "artifact" / "model.safetensors"))
    key = "fc.weight"
    assert not torch.equal(state["ema"][key], state["model"][key])
    assert torch.allclose(weights[key].float(), state["best_model"][key].float(), atol=1e-3)
    if meta["training"]["best_epoch"] == len(history):
        assert torch.allclose(weights[key].float(), state["ema"][key].float(), atol=1e-3)

    evaluated = run_cli("evaluate", str(run_dir / "artifact"), "--data", str(REPO / "configs" / "smoke.yaml"),
                        *SMALL[:-1], "--set", "data.temporal_fraction=0.2",
                        "--split", "temporal", "--bootstrap", "20", "--out", str(tmp_path / "ev"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["n"] == meta["metrics"]["temporal"]["n"]
    assert json.loads(evaluated.stdout)["auc"] == pytest.approx(meta["metrics"]["temporal"]["auc"], abs=0.02)
    no_split = run_cli("evaluate", str(run_dir / "artifact"), "--data", str(REPO / "configs" / "smoke.yaml"),
                       "--split", "temporal", "--out", str(tmp_path / "ev2"))
    assert no_split.returncode == 2 and "has no temporal split" in no_split.stderr


def test_sigkill_mid_run_resumes_and_finishes(tmp_path):
    run_dir = tmp_path / "run"
    cmd = _train_cmd(run_dir, "--set", "train.epochs=4", "--set", "data.params.n_train=256")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_every_step())
    try:
        _Stderr(proc).wait_for("epoch 2/4 step 3/", 240)  # mid-epoch 2: its work since the checkpoint is lost
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run_dir / "artifact").exists()
    assert (run_dir / "checkpoint.pt").is_file()
    assert not list(run_dir.glob(".*.tmp")), "no torn temporary files are left as checkpoints"
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "resuming from checkpoint" in out.stderr
    assert _epochs_logged(run_dir) == [1, 2, 3, 4]
    meta = load_artifact(run_dir / "artifact").raw
    assert [h["epoch"] for h in meta["training"]["history"]] == [1, 2, 3, 4]


def test_a_run_stopped_mid_epoch_and_resumed_trains_the_same_weights_as_one_uninterrupted(tmp_path):
    """SIGTERM in the middle of epoch 2 saves the batch position, RNG and part-done losses; the
    resumed run must end where an uninterrupted run of the same config ends."""
    common = ["--set", "train.epochs=3", "--set", "train.precision=fp32", "--set", "data.params.n_train=128",
              "--set", "data.params.n_test=0", "--set", "train.threads=1"]
    whole = subprocess.run(_train_cmd(tmp_path / "whole", *common), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    cmd = _train_cmd(tmp_path / "parts", *common)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_every_step())
    try:
        err = _Stderr(proc)
        err.wait_for("epoch 2/3 step 3/", 240)
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, err.text()
    assert "checkpoint saved at epoch 2, batch" in err.text()
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "resuming from checkpoint: epoch 2, batch" in resumed.stderr, resumed.stderr
    a = load_file(str(tmp_path / "whole" / "artifact" / "model.safetensors"))
    b = load_file(str(tmp_path / "parts" / "artifact" / "model.safetensors"))
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-3, f"resumed weights differ from the uninterrupted run's by up to {worst:.2e}"
    h1 = load_artifact(tmp_path / "whole" / "artifact").raw["training"]["history"]
    h2 = load_artifact(tmp_path / "parts" / "artifact").raw["training"]["history"]
    for e1, e2 in zip(h1, h2, strict=True):
        assert e1["train_loss"] == pytest.approx(e2["train_loss"], rel=1e-4), (e1, e2)
        assert e1["val_auc"] == pytest.approx(e2["val_auc"], abs=1e-6), (e1, e2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_checkpoints_and_exits_for_requeue(tmp_path, sig):
    run_dir = tmp_path / "run"
    cmd = _train_cmd(run_dir, "--set", "train.epochs=3", "--set", "data.params.n_train=512")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(_epochs_logged(run_dir)) >= 1, 240, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, err
    assert "checkpoint saved" in err
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert _epochs_logged(run_dir) == [1, 2, 3]


def test_a_run_that_cannot_load_its_data_leaves_no_run_folder(tmp_path):
    run_dir = tmp_path / "runs" / "r1"
    out = subprocess.run(_train_cmd(run_dir, "--set", "data.name=imagefolder", "--set", "data.params={}",
                                    "--set", f"data.params.root={tmp_path / 'no-such-data'}"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no-such-data" in out.stderr and "Traceback" not in out.stderr
    assert not run_dir.exists()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"\x00garbage")
    out = subprocess.run(_train_cmd(run_dir), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "checkpoint.pt is corrupt" in out.stderr and "Traceback" not in out.stderr


def test_incomplete_checkpoint_is_a_clear_error_and_orphans_are_removed(tmp_path):
    import torch

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"model": {}, "epoch": 1}, run_dir / "checkpoint.pt")
    out = subprocess.run(_train_cmd(run_dir), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "not a complete pneumo checkpoint (missing optimizer, scheduler" in out.stderr

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = run_dir / f".checkpoint.pt.{dead.pid}.tmp"  # what a writer killed mid-write leaves
    orphan.write_bytes(b"\0" * 1024)
    ours = run_dir / f".checkpoint.pt.{os.getpid()}.tmp"  # a live writer's file is left alone
    ours.write_bytes(b"\0")
    (run_dir / "checkpoint.pt").unlink()
    out = subprocess.run(_train_cmd(run_dir, "--set", "train.epochs=1"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert not orphan.exists() and ours.exists()


def test_two_process_ddp_matches_single_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) trains the same weights as one process."""
    common = ["--set", "train.precision=fp32", "--set", "train.epochs=1", "--set", "data.params.n_test=0", "--no-resume"]
    single = subprocess.run(_train_cmd(tmp_path / "one", *common), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    trackers = f"loggers=[{{name: tensorboard}}, {{name: mlflow, params: {{tracking_uri: 'sqlite:///{tmp_path}/ml.db'}}}}]"
    ddp = subprocess.run(torchrun + _train_cmd(tmp_path / "two", *common, "--set", trackers)[1:], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # trackers run on rank 0 only: one event file, one MLflow run
    assert len(list((tmp_path / "two" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/ml.db")
    assert len(client.search_runs([client.get_experiment_by_name("pneumo").experiment_id])) == 1
    a = load_file(str(tmp_path / "one" / "artifact" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "artifact" / "model.safetensors"))
    assert a.keys() == b.keys()
    # Relative L2 over all weights, not the largest single difference: AdamW turns float noise in
    # a near-zero gradient (summation order: 2 ranks, other thread counts) into a full step of
    # about lr for that weight, so a few dozen of the 11M weights differ by ~lr either way.
    diff = sum(float(((a[k].float() - b[k].float()) ** 2).sum()) for k in a) ** 0.5
    norm = sum(float((a[k].float() ** 2).sum()) for k in a) ** 0.5
    assert diff / norm < 1e-3, f"DDP weights differ from single-process by {diff / norm:.2e} (relative L2)"
    # and tensor by tensor, so one layer trained wrongly (unsynchronised batch-norm statistics, a
    # gradient averaged twice) cannot hide in the sum over 11M weights
    rel = {k: float((a[k].float() - b[k].float()).norm() / a[k].float().norm().clamp_min(1e-12))
           for k in a if a[k].is_floating_point() and a[k].numel() > 1}
    worst = max(rel, key=rel.get)
    assert rel[worst] < 1e-2, f"{worst} differs by {rel[worst]:.2e} (relative L2) between DDP and one process"
    stats = {k: v for k, v in rel.items() if "running_" in k}
    # synchronised: at most 2e-3 (fp32 on an AMX Xeon, 1e-5 on an AVX2 EPYC); each rank on its half batch: up to 0.5
    assert stats and max(stats.values()) < 1e-2, "batch-norm statistics are synchronised across ranks"
    m1 = json.loads((tmp_path / "one" / "artifact" / "model.json").read_text())
    m2 = json.loads((tmp_path / "two" / "artifact" / "model.json").read_text())
    assert m2["training"]["world_size"] == 2 and m1["training"]["world_size"] == 1
    assert m1["threshold"] == pytest.approx(m2["threshold"], abs=1e-3)
    assert m1["metrics"]["val"]["auc"] == pytest.approx(m2["metrics"]["val"]["auc"], abs=1e-3)
