"""Threshold choice, calibration and metrics on hand-checkable data."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumo_core.evaluation import apply_temperature, binary_metrics, bootstrap_auc_ci, choose_threshold, fit_temperature


def _youden(y, p, t):
    pred = p >= t
    return pred[y == 1].mean() - pred[y == 0].mean()


def test_youden_threshold_reaches_the_optimum():
    y = np.array([1, 0, 0, 0, 1, 0])
    p = np.array([.9, .8, .7, .6, .5, .1])
    t = choose_threshold(y, p, "youden")
    assert 0.8 < t <= 0.9 and _youden(y, p, t) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 60)
        p = np.clip(0.3 * y + rng.random(60) * 0.8, 0, 1)
        if len(set(y)) < 2:
            continue
        best = max(_youden(y, p, c) for c in np.unique(p))
        assert _youden(y, p, choose_threshold(y, p, "youden")) == pytest.approx(best)


def test_separable_scores_get_a_threshold_in_the_middle_of_the_gap():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([.05, .1, .2, .8, .9, .95])
    t = choose_threshold(y, p, "youden")
    assert 0.35 < t < 0.65, "midway (in logit space) between 0.2 and 0.8, not at an edge"


def test_target_sensitivity_and_fixed():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([.9, .8, .7, .3, .6, .2, .1, .05])
    t = choose_threshold(y, p, "sensitivity", target_sensitivity=0.75)
    assert (p[y == 1] >= t).mean() >= 0.75 and (p[y == 0] >= t).mean() == 0
    assert choose_threshold(y, p, "fixed", fixed=0.42) == 0.42


def test_temperature_scaling_fixes_overconfidence():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 4000)
    true_margin = rng.normal(0, 1.5, 4000) + np.where(y == 1, 1.0, -1.0)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true_margin))).astype(int)
    logits = np.stack([np.zeros(4000), 3 * true_margin], 1)  # 3x overconfident
    t = fit_temperature(logits, labels)
    assert 2.5 < t < 3.5
    nll = lambda q: -np.mean(labels * np.log(q) + (1 - labels) * np.log(1 - q))  # noqa: E731
    assert nll(apply_temperature(logits, t)) < nll(apply_temperature(logits, 1.0))


def test_binary_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([.9, .7, .4, .6, .2, .1, .3, .8])
    m = binary_metrics(y, p, 0.5, bootstrap=200)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 3)
    assert m["sensitivity"] == 0.75 and m["specificity"] == 0.75 and m["ppv"] == 0.75 and m["npv"] == 0.75
    assert m["accuracy"] == 0.75 and m["f1"] == pytest.approx(0.75)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["auc_ci_low"] <= m["auc"] <= m["auc_ci_high"]
    assert np.isnan(bootstrap_auc_ci(np.array([1, 1]), np.array([.2, .3]))[0])
