"""Prometheus metrics (prometheus-client); multiprocess-aware for several gunicorn workers."""
from __future__ import annotations

import os

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               generate_latest)

REQUESTS = Counter("pneumo_http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram("pneumo_http_request_seconds", "HTTP request latency", ["endpoint", "status"],
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
PREDICTIONS = Counter("pneumo_predictions_total", "Images classified, by predicted label", ["label"])
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
