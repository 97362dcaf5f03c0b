"""Temperature scaling of two-class logits, fitted on validation data (applied by ``inference.calibration``)."""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from pneumo_core.inference.calibration import apply_temperature, logit_margin

__all__ = ["apply_temperature", "fit_temperature"]  # apply_temperature lives in inference, re-exported here


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising validation negative log-likelihood."""
    z, y = logit_margin(logits), np.asarray(y, dtype=np.float64)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))
