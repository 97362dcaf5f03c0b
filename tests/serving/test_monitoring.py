"""Prevalence and drift monitoring: the EM estimate, the predictive values it implies, and the
per-site series and JSON the REST adapter exports."""
from __future__ import annotations

import io

import numpy as np
import pytest

from adapters.flask_app.app import create_app
from adapters.flask_app.settings import Settings
from pneumo_core.config.schema import ServeSection
from pneumo_core.monitoring import TrafficMonitor, em_prevalence, predictive_values


def _posteriors(n: int, prevalence: float, train_prior: float, seed: int = 0) -> np.ndarray:
    """Calibrated posteriors (under ``train_prior``) of traffic with another ``prevalence``:
    scores from N(+1, 1) for positives and N(-1, 1) for negatives."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prevalence
    x = rng.normal(np.where(y, 1.0, -1.0), 1.0)
    f1, f0 = np.exp(-(x - 1) ** 2 / 2), np.exp(-(x + 1) ** 2 / 2)
    return train_prior * f1 / (train_prior * f1 + (1 - train_prior) * f0)


@pytest.mark.parametrize("prevalence", [0.1, 0.35, 0.8])
def test_em_recovers_a_shifted_prevalence(prevalence):
    p = _posteriors(20000, prevalence, train_prior=0.6)
    assert abs(p.mean() - prevalence) > 0.04 or prevalence == 0.35  # the naive mean is biased
    assert em_prevalence(p, 0.6) == pytest.approx(prevalence, abs=0.02)


def test_predictive_values_follow_bayes():
    ppv, npv = predictive_values(0.9, 0.8, 0.1)
    assert ppv == pytest.approx(0.09 / (0.09 + 0.18)) and npv == pytest.approx(0.72 / (0.72 + 0.01))
    assert all(np.isnan(v) for v in predictive_values(0.9, 0.8, float("nan")))


def test_the_window_keeps_the_most_recent_results():
    monitor = TrafficMonitor({"default": {"train_prior": 0.5, "threshold": 0.5, "sensitivity": 0.9,
                                          "specificity": 0.9}}, window=10)
    for i in range(25):
        monitor.record(None, 0.9 if i >= 15 else 0.1, i >= 15, False)
    s = monitor.summary("default")
    assert s["recent"] == 10 and s["predicted_positive"] == 10 and s["prevalence_estimate"] > 0.8
    assert s["ppv"] > s["ppv_at_training_prevalence"]


def test_rest_exports_per_site_series_and_the_monitoring_json(smoke_artifact, phantom_png):
    settings = Settings(artifact=str(smoke_artifact), serve=ServeSection())
    client = create_app(settings).test_client()
    for _ in range(3):
        r = client.post("/api/v1/predict", data={"file": (io.BytesIO(phantom_png), "x.png")},
                        content_type="multipart/form-data")
        assert r.status_code == 200
    body = client.get("/api/v1/monitoring").json
    default = body["sites"]["default"]
    assert default["recent"] >= 3 and 0 <= default["prevalence_estimate"] <= 1
    assert 0 < default["training_prevalence"] < 1 and default["ppv"] is not None
    text = client.get("/metrics").get_data(as_text=True)
    for series in ('pneumo_probability_bucket{le="0.5",site="default"}', 'pneumo_ood_score_bucket',
                   'pneumo_prevalence_estimate{site="default"}', 'pneumo_training_prevalence{site="default"}',
                   'pneumo_predictions_total{label='):
        assert series in text, series


def test_monitoring_needs_the_api_key_when_keys_are_on(smoke_artifact, monkeypatch):
    monkeypatch.setenv("PNEUMO_API_KEYS", "k1")
    monkeypatch.setenv("PNEUMO_ARTIFACT", str(smoke_artifact))
    client = create_app(Settings.from_env()).test_client()
    assert client.get("/api/v1/monitoring").status_code == 401
    assert client.get("/api/v1/monitoring", headers={"X-API-Key": "k1"}).status_code == 200
