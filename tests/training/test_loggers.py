"""Logger plugins ``csv``, ``tensorboard`` and ``mlflow``: what a run writes, read back with each
library's own reader, and a resumed run continuing the same tracked run."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import REPO, require_module, run_cli
from pneumo_core.training import EXIT_PREEMPTED

require_module("tensorboard", "the tracking extra is not installed: pip install -e '.[tracking]'")
require_module("mlflow", "the tracking extra is not installed: pip install -e '.[tracking]'")
from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SMALL = ["--set", "data.params.n_train=96", "--set", "data.params.n_val=32", "--set", "data.params.n_test=0",
         "--set", "train.bootstrap=20", "--set", "train.batch_size=16", "--no-progress"]


def _config(tmp_path: Path, uri: str) -> Path:
    data = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    data["loggers"] = [{"name": "csv"}, {"name": "tensorboard"},
                       {"name": "mlflow", "params": {"tracking_uri": uri, "experiment": "pneumo-test",
                                                     "tags": {"team": "qa"}}}]
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _train(config: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pneumo_core.cli.main", "train", str(config), "--run-dir", str(run_dir),
            *SMALL, *extra]


def _scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _only_run(uri: str):
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("pneumo-test")
    assert experiment is not None, "the experiment named in the config was created"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, f"one pneumo run is one MLflow run, found {len(runs)}"
    return client, runs[0]


def test_every_logger_records_epochs_config_and_final_artifact(tmp_path, monkeypatch):
    """With the README's relative sqlite URI (read, as MLflow does, from the working folder)."""
    monkeypatch.chdir(tmp_path)
    uri, run_dir = "sqlite:///mlflow.db", tmp_path / "run"
    out = subprocess.run(_train(_config(tmp_path, uri), run_dir), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    model = json.loads((run_dir / "artifact" / "model.json").read_text())

    with (run_dir / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]

    tb = run_dir / "tensorboard"
    losses = _scalars(tb, "train_loss")
    assert [s for s, _ in losses] == [1, 2, 3]
    assert [v for _, v in losses] == pytest.approx([float(r["train_loss"]) for r in rows], rel=1e-5)
    assert _scalars(tb, "final/val.auc")[0][1] == pytest.approx(model["metrics"]["val"]["auc"], rel=1e-5)
    acc = EventAccumulator(str(tb), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert {"plots/val_roc", "plots/learning_curves"} <= set(acc.Tags()["images"])
    assert {"config/text_summary", "report/text_summary"} <= set(acc.Tags()["tensors"])

    client, run = _only_run(uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "3" and run.data.params["model.name"] == "resnet18"
    assert run.data.tags["team"] == "qa"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert run.data.metrics["final.val.auc"] == pytest.approx(model["metrics"]["val"]["auc"], rel=1e-6)
    stored = {a.path for a in client.list_artifacts(run.info.run_id, "artifact")}
    assert {"artifact/model.json", "artifact/report.md", "artifact/val_roc.png"} <= stored
    assert "artifact/model.safetensors" not in stored, "weights are uploaded only with log_weights: true"
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlartifacts").is_dir()


def test_a_resumed_run_continues_the_same_tracked_run(tmp_path, monkeypatch):
    """With the file store of the issue's example (``file:./mlruns``, relative to the working folder)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this test's own client
    mlruns, run_dir = tmp_path / "mlruns", tmp_path / "run"
    cmd = _train(_config(tmp_path, "file:./mlruns"), run_dir, "--set", "train.epochs=3", "--set", "data.params.n_train=256")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # SIGTERM as soon as the first epoch is tracked: the trainer checkpoints mid-epoch 2 and exits
        metrics_csv = run_dir / "metrics.csv"
        while not (metrics_csv.exists() and len(metrics_csv.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            subprocess.run(["sleep", "0.05"])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, err
    client, run = _only_run(mlruns.as_uri())
    assert run.info.status == "KILLED", "an interrupted run is marked so until it resumes"
    first_id = run.info.run_id

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    client, run = _only_run(mlruns.as_uri())
    assert run.info.run_id == first_id and run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(first_id, "train_loss")) == [1, 2, 3]
    assert [s for s, _ in _scalars(run_dir / "tensorboard", "train_loss")] == [1, 2, 3]


def test_logger_config_errors_name_the_key(tmp_path):
    data = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    data["loggers"] = [{"name": "csv"}, {"name": "mlflow", "params": {"experiment": ""}}]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    bad = run_cli("config", "validate", str(tmp_path / "bad.yaml"))
    assert bad.returncode == 2 and "loggers.1.params.experiment" in bad.stderr, bad.stderr
    data["loggers"] = [{"name": "wandb"}]
    (tmp_path / "unknown.yaml").write_text(yaml.safe_dump(data))
    unknown = run_cli("config", "validate", str(tmp_path / "unknown.yaml"))
    assert unknown.returncode == 2 and "loggers.0.name" in unknown.stderr and "mlflow" in unknown.stderr, unknown.stderr


def test_plugins_lists_loggers_with_their_params_schema():
    out = run_cli("plugins", "--json")
    assert out.returncode == 0, out.stderr
    infos = {i["name"]: i for i in json.loads(out.stdout)}
    assert "logger:tensorboard" in infos["tensorboard_logger"]["provides"]
    assert "logger:mlflow" in infos["mlflow_logger"]["provides"]
    schema = infos["mlflow_logger"]["params"]["logger:mlflow"]
    assert {"tracking_uri", "experiment", "run_name", "tags", "log_weights"} <= set(schema["properties"])


def test_a_tracker_that_cannot_start_stops_the_run_before_training(tmp_path):
    from harness import free_port

    data = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    data["loggers"] = [{"name": "mlflow", "params": {"tracking_uri": f"http://127.0.0.1:{free_port()}"}}]
    (tmp_path / "down.yaml").write_text(yaml.safe_dump(data))
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    out = run_cli("train", str(tmp_path / "down.yaml"), "--run-dir", str(tmp_path / "run"), *SMALL, env=env,
                  timeout=120)
    assert out.returncode == 2, out.stderr
    assert "logger 'mlflow' failed to start" in out.stderr and "nothing was trained" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


FLAKY_TRACKER = """
from pneumo_core import LoggerSpec, hookimpl

class Flaky:
    def start(self, params, resumed): pass
    def log_metrics(self, metrics, step):
        if step == 2:
            raise ConnectionError("tracking server went away")
    def log_artifact(self, folder, metrics): pass
    def close(self, status): pass

@hookimpl
def pneumo_loggers():
    return [LoggerSpec(name="flaky", build=lambda params, run: Flaky())]
"""


def test_a_tracker_failing_mid_run_is_switched_off_and_training_finishes(tmp_path):
    (tmp_path / "flaky_tracker.py").write_text(FLAKY_TRACKER)
    data = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    data["plugins"] = ["flaky_tracker.py"]
    data["loggers"] = [{"name": "flaky"}, {"name": "csv"}]
    (tmp_path / "flaky.yaml").write_text(yaml.safe_dump(data))
    out = run_cli("train", str(tmp_path / "flaky.yaml"), "--run-dir", str(tmp_path / "run"), *SMALL)
    assert out.returncode == 0, out.stderr
    assert "logger 'flaky' failed in log_metrics and is switched off" in out.stderr
    assert "tracking server went away" in out.stderr
    assert (tmp_path / "run" / "artifact" / "model.json").is_file()
    with (tmp_path / "run" / "metrics.csv").open() as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3], "the other loggers go on"
