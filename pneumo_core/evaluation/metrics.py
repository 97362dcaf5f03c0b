"""Binary classification metrics (positive class = index 1) via scikit-learn."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score


def bootstrap_auc_ci(y: np.ndarray, p: np.ndarray, n: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ROC AUC (resamples lacking a class are skipped)."""
    if n <= 0 or len(np.unique(y)) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() != y[idx].max():
            aucs.append(roc_auc_score(y[idx], p[idx]))
    if not aucs:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of |accuracy - confidence| weighted by bin share.
    (scikit-learn has calibration_curve but no ECE; this is its few-line definition.)"""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(ece)


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float, bootstrap: int = 1000,
                   seed: int = 0) -> dict[str, float]:
    """AUC (with 95% CI), accuracy, sensitivity, specificity, PPV, NPV, F1, Brier, ECE at a threshold."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    sens, ppv = _safe_div(tp, tp + fn), _safe_div(tp, tp + fp)
    both = len(np.unique(y)) == 2
    lo, hi = bootstrap_auc_ci(y, p, bootstrap, seed)
    return {
        "n": int(len(y)), "n_positive": int(y.sum()),
        "auc": float(roc_auc_score(y, p)) if both else float("nan"), "auc_ci_low": lo, "auc_ci_high": hi,
        "accuracy": float((pred == y).mean()), "sensitivity": sens,
        "specificity": _safe_div(tn, tn + fp), "ppv": ppv, "npv": _safe_div(tn, tn + fn),
        "f1": _safe_div(2 * sens * ppv, sens + ppv) if not np.isnan(sens + ppv) else float("nan"),
        "brier": float(brier_score_loss(y, p)), "ece": expected_calibration_error(y, p),
        "threshold": float(threshold), "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
    }
