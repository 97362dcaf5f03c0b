"""Choose the operating threshold on validation data (never on test)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

_EPS = 1e-6


def _logit(q: float) -> float:
    q = min(max(q, _EPS), 1 - _EPS)
    return float(np.log(q / (1 - q)))


def _middle(low: float, high: float) -> float:
    """A cut strictly inside (low, high]: the midpoint in logit space, so it sits well away from
    both neighbouring scores rather than hugging one class."""
    mid = (_logit(low) + _logit(high)) / 2
    return float(1 / (1 + np.exp(-mid)))


def choose_threshold(y: np.ndarray, p: np.ndarray, method: str = "youden",
                     target_sensitivity: float = 0.95, fixed: float = 0.5) -> float:
    """Youden's J (max sensitivity + specificity - 1), the highest cut reaching a target
    sensitivity, or a fixed value. Any cut between two neighbouring scores makes the same
    decisions; the one returned is the middle of that gap (of the widest optimal gap for Youden)."""
    if method == "fixed":
        return float(fixed)
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    thr = np.clip(thr, 0.0, 1.0)
    lows = np.append(thr[1:], 0.0)  # cut i predicts positive for p in [thr[i], 1]: any t in (lows[i], thr[i]]
    if method == "youden":
        j = tpr - fpr
        best = np.flatnonzero(j >= j.max() - 1e-12)
        # consecutive optimal indices form one gap from the lowest low to the highest high
        runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
        gaps = [(lows[r[-1]], thr[r[0]]) for r in runs]
        low, high = max(gaps, key=lambda g: _logit(g[1]) - _logit(g[0]))
        return _middle(low, high)
    if method == "sensitivity":
        i = int(np.argmax(tpr >= target_sensitivity))
        return _middle(lows[i], thr[i])
    raise ValueError(f"unknown threshold method {method!r}")


def threshold_method_label(method: str, target_sensitivity: float) -> str:
    """How model.json names a threshold rule: ``youden``, ``fixed`` or ``sensitivity>=S``."""
    return f"sensitivity>={target_sensitivity}" if method == "sensitivity" else method
