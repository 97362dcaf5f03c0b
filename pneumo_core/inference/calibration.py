"""Calibrated probabilities from two-class logits (temperature scaling, as stored in an artifact)."""
from __future__ import annotations

import numpy as np
from scipy.special import expit


def logit_margin(logits: np.ndarray) -> np.ndarray:
    """``logit[1] - logit[0]`` of (N, 2) logits, in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits[:, 1] - logits[:, 0]


def apply_temperature(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(positive) from (N, 2) logits divided by ``temperature``."""
    return expit(logit_margin(logits) / temperature)  # no overflow for very negative margins
