"""Prometheus metrics (prometheus-client); multiprocess-aware for several gunicorn workers."""
from __future__ import annotations

import os

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)

REQUESTS = Counter("pneumo_http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram("pneumo_http_request_seconds", "HTTP request latency", ["endpoint", "status"],
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
# Per site: "default" (the model's own operating point) or a site profile of the artifact; unknown
# sites are refused before they reach these, so the label values are bounded.
PREDICTIONS = Counter("pneumo_predictions_total", "Images classified, by predicted label", ["label", "site"])
PROBABILITY = Histogram("pneumo_probability", "Calibrated P(pneumonia) of classified images", ["site"],
                        buckets=tuple(round(0.05 * i, 2) for i in range(1, 20)))
OOD_SCORE = Histogram("pneumo_ood_score", "Out-of-distribution score (percentile among validation X-rays)",
                      ["site"], buckets=(50, 75, 90, 95, 99, 99.5, 99.9, 100))
PREVALENCE = Gauge("pneumo_prevalence_estimate", "Pneumonia prevalence estimated from this worker's recent "
                   "traffic (EM prior re-estimation, Saerens et al. 2002)", ["site"], multiprocess_mode="liveall")
TRAINING_PREVALENCE = Gauge("pneumo_training_prevalence", "Prevalence the probabilities were calibrated under",
                            ["site"], multiprocess_mode="liveall")


def observe_response(response, monitor) -> None:
    """Count one response's results in the metrics and the traffic monitor."""
    site = response.site.name if response.site else "default"
    for r in response.results:
        PREDICTIONS.labels(label=r.label, site=site).inc()
        PROBABILITY.labels(site=site).observe(r.probability)
        if r.ood_score is not None:
            OOD_SCORE.labels(site=site).observe(r.ood_score)
        monitor.record(site, r.probability, r.label == response.model.positive_class, r.out_of_distribution)
    summary = monitor.summary(site)
    if summary["prevalence_estimate"] is not None:
        PREVALENCE.labels(site=site).set(summary["prevalence_estimate"])
    TRAINING_PREVALENCE.labels(site=site).set(summary["training_prevalence"])
# Label values come from the client: only these methods get their own series, so a client cannot
# create series without bound by inventing method names.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The ``method`` label for a request: the method itself when standard, else ``other``."""
    return method if method in KNOWN_METHODS else "other"


def exposition() -> tuple[bytes, str]:
    """The metrics page; aggregates all workers when PROMETHEUS_MULTIPROC_DIR is set."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
