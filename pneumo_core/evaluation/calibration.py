"""Temperature scaling of two-class logits, fitted on validation data."""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit


def _margin(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    return logits[:, 1] - logits[:, 0]


def apply_temperature(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(positive) from (N, 2) logits divided by ``temperature``."""
    return expit(_margin(logits) / temperature)  # no overflow for very negative margins


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising validation negative log-likelihood."""
    z, y = _margin(logits), np.asarray(y, dtype=np.float64)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))
