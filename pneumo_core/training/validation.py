"""Scoring cached validation images during and after training."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pneumo_core.data.preprocess import Preprocessing
from pneumo_core.device import autocast
from pneumo_core.training.loader import iterate_eval


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: np.ndarray, prep: Preprocessing, device: torch.device,
                   precision: str, batch_size: int = 64, channels_last: bool = False) -> np.ndarray:
    """Logits (N, C) for cached uint8 images, unaugmented."""
    model.eval()
    out = []
    for x in iterate_eval(images, prep, batch_size):
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out.append(model(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)


def loss_and_auc(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Cross-entropy and ROC AUC of (N, 2) logits against 0/1 labels."""
    from sklearn.metrics import roc_auc_score

    t = torch.from_numpy(logits)
    loss = float(F.cross_entropy(t, torch.from_numpy(labels).long()))
    prob = torch.softmax(t, 1)[:, 1].numpy()
    return loss, float(roc_auc_score(labels, prob))
