"""Prevalence of the positive class in unlabelled traffic, from calibrated probabilities.

Saerens, Latinne & Decaestecker (2002), "Adjusting the outputs of a classifier to new a priori
probabilities": EM that re-weights the posteriors by the ratio of the new prior to the training
prior until the mean adjusted posterior equals the prior. Ten lines of numpy: no maintained
library implements it for a stream of probabilities.
"""
from __future__ import annotations

import numpy as np


def em_prevalence(p: np.ndarray, train_prior: float, iterations: int = 200, tol: float = 1e-7) -> float:
    """The positive-class prevalence that best explains posteriors ``p`` (calibrated under a
    training prevalence ``train_prior``); NaN for no data."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    if p.size == 0:
        return float("nan")
    prior = train_prior = float(np.clip(train_prior, 1e-6, 1 - 1e-6))
    for _ in range(iterations):
        w1 = prior / train_prior * p
        w0 = (1 - prior) / (1 - train_prior) * (1 - p)
        new = float(np.mean(w1 / (w1 + w0)))
        if abs(new - prior) < tol:
            return new
        prior = new
    return prior


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> tuple[float, float]:
    """(PPV, NPV) at an operating point's sensitivity and specificity for a prevalence (Bayes)."""
    if not np.isfinite(prevalence):
        return float("nan"), float("nan")
    tp, fp = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    tn, fn = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    return (tp / (tp + fp) if tp + fp else float("nan")), (tn / (tn + fn) if tn + fn else float("nan"))
