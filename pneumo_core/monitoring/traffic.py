"""A per-site window of recent results, summarised for ``/api/v1/monitoring`` and ``/metrics``."""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Optional

import numpy as np

from pneumo_core.monitoring.prevalence import em_prevalence, predictive_values

DEFAULT_SITE = "default"  # results without a site: the model's own operating point


class TrafficMonitor:
    """Keeps the last ``window`` results of each site (in this process) and estimates the
    pneumonia prevalence they come from, beside the prior the probabilities were calibrated under.

    ``operating_points`` maps a site (``default`` for the model's own) to its training prior,
    threshold, sensitivity and specificity. Thread-safe.
    """

    def __init__(self, operating_points: dict[str, dict[str, float]], window: int = 1000) -> None:
        self.points = operating_points
        self.window = window
        self._recent: dict[str, deque] = {}
        self._lock = threading.Lock()

    def record(self, site: Optional[str], probability: float, positive: bool, ood: Optional[bool]) -> None:
        key = site or DEFAULT_SITE
        with self._lock:
            self._recent.setdefault(key, deque(maxlen=self.window)).append((probability, positive, ood))

    def summary(self, site: str) -> dict[str, Any]:
        """Counts, prevalence estimate and the PPV/NPV it implies for one site's recent window."""
        with self._lock:
            rows = list(self._recent.get(site, ()))
        point = self.points[site]
        p = np.array([r[0] for r in rows if not r[2]], dtype=np.float64)  # not images flagged as foreign
        prevalence = em_prevalence(p, point["train_prior"]) if len(p) else float("nan")
        ppv, npv = predictive_values(point["sensitivity"], point["specificity"], prevalence)
        ppv0, npv0 = predictive_values(point["sensitivity"], point["specificity"], point["train_prior"])
        flagged = [r[2] for r in rows if r[2] is not None]

        def num(v: float) -> Optional[float]:
            return round(float(v), 4) if np.isfinite(v) else None

        return {
            "recent": len(rows), "window": self.window,
            "predicted_positive": int(sum(r[1] for r in rows)), "predicted_negative": int(sum(not r[1] for r in rows)),
            "out_of_distribution": int(sum(flagged)),
            "prevalence_estimate": num(prevalence), "training_prevalence": num(point["train_prior"]),
            "threshold": num(point["threshold"]), "sensitivity": num(point["sensitivity"]),
            "specificity": num(point["specificity"]),
            "ppv": num(ppv), "npv": num(npv), "ppv_at_training_prevalence": num(ppv0),
            "npv_at_training_prevalence": num(npv0),
        }

    def summaries(self) -> dict[str, dict[str, Any]]:
        return {site: self.summary(site) for site in self.points}


def operating_points(raw: dict[str, Any], sites: dict) -> dict[str, dict[str, float]]:
    """The model's own operating point and each site's, from an artifact's metadata: the prior
    the temperature was fitted under, the threshold, and the sensitivity/specificity measured there."""
    selected = raw.get("selected_on") or "val"
    m = (raw.get("metrics") or {}).get(selected) or {}
    prior = m.get("n_positive", 0) / m["n"] if m.get("n") else 0.5
    points = {DEFAULT_SITE: {"train_prior": prior, "threshold": raw["threshold"],
                             "sensitivity": m.get("sensitivity", float("nan")),
                             "specificity": m.get("specificity", float("nan"))}}
    for name, site in sites.items():
        counts = getattr(site, "images", None) or {}
        total = sum(counts.values())
        apparent = getattr(site, "apparent", None) or {}
        own = getattr(site, "temperature_from", "site") == "site"
        points[name] = {"train_prior": (list(counts.values())[1] / total) if own and total else prior,
                        "threshold": site.threshold,
                        "sensitivity": apparent.get("sensitivity", float("nan")),
                        "specificity": apparent.get("specificity", float("nan"))}
    return points
