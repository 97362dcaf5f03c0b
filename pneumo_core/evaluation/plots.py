"""Evaluation plots as PNG files (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (ConfusionMatrixDisplay, PrecisionRecallDisplay,  # noqa: E402
                             RocCurveDisplay)
from sklearn.calibration import CalibrationDisplay  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluation_plots(out: Path, y: np.ndarray, p: np.ndarray, threshold: float,
                     classes: Sequence[str], prefix: str, title: str) -> list[Path]:
    """ROC, precision-recall, confusion matrix and reliability diagram for one split."""
    paths = []
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    RocCurveDisplay.from_predictions(y, p, ax=ax, name=title)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_title(f"ROC — {title}")
    paths.append(_save(fig, out / f"{prefix}_roc.png"))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    PrecisionRecallDisplay.from_predictions(y, p, ax=ax, name=title)
    ax.set_title(f"Precision-recall — {title}")
    paths.append(_save(fig, out / f"{prefix}_pr.png"))
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ConfusionMatrixDisplay.from_predictions(y, (p >= threshold).astype(int), display_labels=list(classes),
                                            ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(f"Confusion at {threshold:.3f} — {title}")
    paths.append(_save(fig, out / f"{prefix}_confusion.png"))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    CalibrationDisplay.from_predictions(y, p, n_bins=10, ax=ax, name=title)
    ax.set_title(f"Reliability — {title}")
    paths.append(_save(fig, out / f"{prefix}_reliability.png"))
    return paths


def learning_curves(out: Path, history: Sequence[dict]) -> Path:
    """Loss and validation AUC per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    b.plot(epochs, [h["val_auc"] for h in history], "o-", color="C2")
    b.set_xlabel("epoch"), b.set_ylabel("validation ROC AUC")
    fig.suptitle("Learning curves")
    return _save(fig, out / "learning_curves.png")
