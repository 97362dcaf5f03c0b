"""Choose the operating threshold on validation data (never on test)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve


def choose_threshold(y: np.ndarray, p: np.ndarray, method: str = "youden",
                     target_sensitivity: float = 0.95, fixed: float = 0.5) -> float:
    """Youden's J (max sensitivity + specificity - 1), the highest threshold that reaches a target
    sensitivity, or a fixed value. Thresholds are midpoints between neighbouring scores."""
    if method == "fixed":
        return float(fixed)
    fpr, tpr, thr = roc_curve(y, p)
    thr = np.clip(thr, 0.0, 1.0)
    if method == "youden":
        # Many thresholds often tie on a well-separated validation set; take the middle of the
        # tied range (in logit space) rather than its edge, so the cut is not hugging one class.
        j = tpr - fpr
        tied = thr[(j >= j.max() - 1e-12) & (thr > 0) & (thr < 1)]
        if len(tied) == 0:
            tied = thr[[int(np.argmax(j))]]
        lo, hi = float(np.clip(tied.min(), 1e-6, 1 - 1e-6)), float(np.clip(tied.max(), 1e-6, 1 - 1e-6))
        low_side = thr[thr < lo]
        lo = float(low_side.max()) if len(low_side) else lo  # the tied range reaches down to the next score
        logit = lambda q: np.log(q / (1 - q))  # noqa: E731
        mid = (logit(max(lo, 1e-6)) + logit(hi)) / 2
        return float(1 / (1 + np.exp(-mid)))
    elif method == "sensitivity":
        i = int(np.argmax(tpr >= target_sensitivity))
    else:
        raise ValueError(f"unknown threshold method {method!r}")
    # midpoint to the next lower score keeps the decision stable for scores near the cut
    lower = thr[i + 1] if i + 1 < len(thr) else 0.0
    return float(np.clip((thr[i] + lower) / 2 if thr[i] > lower else thr[i], 1e-6, 1 - 1e-6))
