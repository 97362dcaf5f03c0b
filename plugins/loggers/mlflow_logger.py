"""Logger plugin ``mlflow``: one MLflow run per pneumo run, through ``MlflowClient``.

The config goes in as params, each epoch's metrics as metrics at ``step`` = epoch, and at the end
the artifact's final metrics (``final.val.auc``...) plus its report, model card and plots as run
artifacts (``log_weights: true`` adds the weights). The run id is kept in
``<run_dir>/mlflow_run.json``, so a resumed run continues the same MLflow run; an interrupted run
is marked KILLED until it resumes, a failed one FAILED.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from pneumo_core import LoggerSpec, PluginError, RunInfo, hookimpl

_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
_PARAM_MAX = 6000  # MLflow's longest param value


class MlflowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tracking_uri: Optional[str] = Field(None, description="e.g. sqlite:///mlflow.db, http://host:5000 or "
                                        "file:./mlruns (default: $MLFLOW_TRACKING_URI, else sqlite:///<run_dir>/mlflow.db).")
    artifact_location: Optional[str] = Field(None, description="Where a new experiment keeps run artifacts "
                                             "(default: mlartifacts beside a sqlite database, else MLflow's own).")
    experiment: str = Field("pneumo", min_length=1, description="Experiment name (created when missing).")
    run_name: Optional[str] = Field(None, description="Run name (default: the config's name).")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra run tags.")
    log_weights: bool = Field(False, description="Also upload the artifact's weights files.")


class MlflowLogger:
    def __init__(self, params: MlflowParams, run: RunInfo) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise PluginError(f"logger mlflow needs the mlflow package ({exc}): pip install 'pneumo[tracking]'") from None
        self.params, self.run = params, run
        self.uri = params.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") \
            or f"sqlite:///{Path(run.run_dir).resolve() / 'mlflow.db'}"
        if self.uri.startswith("file:") or "://" not in self.uri:
            # MLflow 3 refuses its file store unless asked; a config naming one has asked
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        self.state_file = Path(run.run_dir) / "mlflow_run.json"
        self.run_id: Optional[str] = None
        self.done_step = 0

    def _previous_run(self) -> Optional[str]:
        try:
            saved = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return saved.get("run_id") if saved.get("tracking_uri") == self.uri else None

    def _artifact_location(self) -> Optional[str]:
        if self.params.artifact_location:
            return self.params.artifact_location
        if self.uri.startswith("sqlite:///"):
            return (Path(self.uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
        return None

    def start(self, params, resumed) -> None:
        from mlflow.entities import Param

        previous = self._previous_run() if resumed else None
        if previous is not None:
            self.run_id = previous
            self.client.update_run(previous, status="RUNNING")
            history = self.client.get_metric_history(previous, "train_loss")
            self.done_step = max((m.step for m in history), default=0)
            return
        experiment = self.client.get_experiment_by_name(self.params.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            experiment_id = self.client.create_experiment(self.params.experiment, self._artifact_location())
        tags = {"pneumo.run_dir": str(Path(self.run.run_dir).resolve()), **self.params.tags}
        created = self.client.create_run(experiment_id, run_name=self.params.run_name or self.run.config.name,
                                         tags=tags)
        self.run_id = created.info.run_id
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"tracking_uri": self.uri, "run_id": self.run_id}), encoding="utf-8")
        tmp.replace(self.state_file)
        items = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in params.items()]
        items = [Param(p.key, p.value[:_PARAM_MAX]) for p in items]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def _metrics(self, metrics, step) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_metrics(self, metrics, step) -> None:
        if step <= self.done_step:  # logged before the interruption: keep one value per epoch
            return
        self._metrics(metrics, step)
        self.done_step = step

    def log_artifact(self, folder, metrics) -> None:
        self._metrics({f"final.{k}": v for k, v in metrics.items()}, self.done_step)
        folder = Path(folder)
        with tempfile.TemporaryDirectory() as tmp:  # what to upload, without the weights unless asked
            staged = Path(tmp) / "artifact"
            staged.mkdir()
            for path in folder.iterdir():
                if path.is_file() and (self.params.log_weights or path.suffix != ".safetensors"):
                    shutil.copy2(path, staged / path.name)
            self.client.log_artifacts(self.run_id, str(staged), artifact_path="artifact")

    def close(self, status) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=_STATUS[status])


@hookimpl
def pneumo_loggers():
    return [LoggerSpec(name="mlflow", build=MlflowLogger, params_model=MlflowParams,
                       description="MLflow tracking: config as params, epoch metrics, final metrics and plots")]
