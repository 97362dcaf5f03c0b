"""Logger plugin ``tensorboard``: event files under ``<run_dir>/tensorboard`` (or ``log_dir``).

Scalars per epoch (``train_loss``, ``val_auc``...), the config as text, and at the end the
artifact's final metrics (``final/val.auc``...), its plots as images and its report as text.
A resumed run writes into the same folder and purges the events of epochs it repeats.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pneumo_core import LoggerSpec, PluginError, RunInfo, hookimpl


class TensorBoardParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    log_dir: Optional[Path] = Field(None, description="Event file folder, relative to the config file's folder "
                                    "(default: <run_dir>/tensorboard).")
    flush_secs: int = Field(30, ge=1, description="Seconds between flushes to disk.")


class TensorBoardLogger:
    def __init__(self, params: TensorBoardParams, run: RunInfo) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise PluginError(f"logger tensorboard needs the tensorboard package ({exc}): "
                              "pip install 'pneumo[tracking]'") from None
        self._writer_type = SummaryWriter
        self.log_dir = Path(params.log_dir).expanduser() if params.log_dir else Path(run.run_dir) / "tensorboard"
        self.params, self.run = params, run
        self.writer = None
        self.last_step = 0

    def start(self, params, resumed) -> None:
        done = len(self.run.history) if resumed else 0
        # purge_step hides events logged before at or after it: the epochs a resumed run repeats,
        # or everything an earlier run left in the folder when this one starts afresh
        self.writer = self._writer_type(str(self.log_dir), flush_secs=self.params.flush_secs,
                                        purge_step=done + 1 if resumed else 0)
        self.last_step = done
        if not resumed:
            rows = "\n".join(f"| {k} | {json.dumps(v)} |" for k, v in params.items())
            self.writer.add_text("config", "| key | value |\n| --- | --- |\n" + rows, 0)

    def log_metrics(self, metrics, step) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.last_step = step
        self.writer.flush()

    def log_artifact(self, folder, metrics) -> None:
        from PIL import Image

        folder = Path(folder)
        for key, value in metrics.items():
            self.writer.add_scalar(f"final/{key}", value, self.last_step)
        for png in sorted(folder.glob("*.png")):
            with Image.open(png) as im:
                self.writer.add_image(f"plots/{png.stem}", np.asarray(im.convert("RGB")), self.last_step,
                                      dataformats="HWC")
        report = folder / "report.md"
        if report.is_file():
            self.writer.add_text("report", report.read_text(encoding="utf-8"), self.last_step)
        self.writer.flush()

    def close(self, status) -> None:
        if self.writer is not None:
            self.writer.close()


@hookimpl
def pneumo_loggers():
    return [LoggerSpec(name="tensorboard", build=TensorBoardLogger, params_model=TensorBoardParams,
                       description="TensorBoard event files: epoch scalars, config, final metrics and plots")]
