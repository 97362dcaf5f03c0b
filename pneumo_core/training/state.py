"""The trainer's progress, typed, and how it maps onto a checkpoint file."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch


@dataclass
class TrainState:
    """Where a run stands: what a checkpoint holds besides weights, optimizer and RNG.

    ``epoch`` and ``batch`` are the next step to run (0-based); ``history`` one metrics dict per
    finished epoch; ``best_*`` the epoch that ``data.select_on`` chose so far, with its weights;
    ``stale`` epochs without a gain (early stopping); ``epoch_losses`` the losses of the part-done
    epoch ``epoch``, so that its train_loss is whole after a resume.
    """

    epoch: int = 0
    batch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_auc: float = -1.0
    best_epoch: int = -1
    best_model: Optional[dict[str, torch.Tensor]] = None
    stale: int = 0
    stopped_early: bool = False
    epoch_losses: list[float] = field(default_factory=list)
    finished: bool = False

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> "TrainState":
        return cls(epoch=saved["epoch"], batch=saved["batch"], history=list(saved["history"]),
                   best_auc=saved["best_auc"], best_epoch=saved["best_epoch"], best_model=saved.get("best_model"),
                   stale=saved.get("stale", 0), stopped_early=bool(saved.get("stopped_early")),
                   epoch_losses=list(saved.get("epoch_losses", [])), finished=bool(saved.get("finished")))

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint keys this state owns (the trainer adds weights, optimizer, RNG)."""
        return {"epoch": self.epoch, "batch": self.batch, "history": self.history, "best_auc": self.best_auc,
                "best_epoch": self.best_epoch, "best_model": self.best_model, "stale": self.stale,
                "stopped_early": self.stopped_early, "epoch_losses": list(self.epoch_losses),
                "finished": self.finished}

    def record_epoch(self, metrics: dict[str, Any], score: float, weights: dict[str, torch.Tensor]) -> None:
        """Append an epoch's metrics; keep a copy of ``weights`` when ``score`` beats the best."""
        self.history.append(metrics)
        if score > self.best_auc:
            self.best_auc, self.best_epoch, self.stale = score, metrics["epoch"], 0
            self.best_model = {k: v.detach().clone() for k, v in weights.items()}
        else:
            self.stale += 1
