"""The experiment trackers a config's ``loggers`` list names, driven by the trainer on rank 0.

A tracker that fails to start stops the run before any training (the user fixes the URI and
reruns); one that fails later is switched off with a warning, so a tracking server going down
never costs the training work.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Literal

from pneumo_core.config.loader import ResolvedConfig
from pneumo_core.errors import PneumoError
from pneumo_core.records import RunInfo, RunLogger

log = logging.getLogger("pneumo.train")


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.002}}`` -> ``{"train.lr": 0.002}``; lists become JSON text."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, name + "."))
        elif isinstance(value, (list, tuple, dict)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def final_metrics(artifact: Path) -> dict[str, float]:
    """The artifact's validation metrics flattened as ``val.auc``, ``temporal.specificity``...
    (finite numbers only)."""
    data = json.loads((artifact / "model.json").read_text(encoding="utf-8"))
    out = {}
    for split, values in (data.get("metrics") or {}).items():
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[f"{split}.{key}"] = float(value)
    return out


class Trackers:
    """Every logger of the config, built and started together by :meth:`open`; calls fan out to
    each (none before ``open``, so ranks other than 0 hold an empty one)."""

    def __init__(self) -> None:
        self._live: list[tuple[str, RunLogger]] = []

    def open(self, rc: ResolvedConfig, run: RunInfo, resumed: bool) -> None:
        """Build and start each logger; a failure closes those started and raises PneumoError."""
        params = flat_params(rc.config.model_dump(mode="json"))
        for ref, typed in zip(rc.config.loggers, rc.logger_params, strict=True):
            tracker = None
            try:
                tracker = rc.pm.logger(ref.name).build(typed, run)
                tracker.start(params, resumed)
            except Exception as exc:
                if tracker is not None:  # built: it may hold a half-started run to close
                    self._live.append((ref.name, tracker))
                self.close("failed")
                if isinstance(exc, PneumoError):
                    raise
                what = "the run was not resumed" if resumed else "nothing was trained"
                raise PneumoError(f"logger '{ref.name}' failed to start: {exc}. Fix loggers in the config "
                                  f"(or remove it) and run again; {what}.") from exc
            self._live.append((ref.name, tracker))

    def _each(self, what: str, call) -> None:
        for item in list(self._live):
            name, tracker = item
            try:
                call(tracker)
            except Exception as exc:  # a tracker going away must not cost the training run
                log.warning("logger '%s' failed in %s and is switched off for this run: %s", name, what, exc)
                self._live.remove(item)

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        numbers = {k: float(v) for k, v in metrics.items()
                   if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v)}
        self._each("log_metrics", lambda t: t.log_metrics(numbers, int(metrics["epoch"])))

    def log_artifact(self, artifact: Path) -> None:
        metrics = final_metrics(artifact)
        self._each("log_artifact", lambda t: t.log_artifact(artifact, metrics))

    def close(self, status: Literal["finished", "interrupted", "failed"]) -> None:
        self._each("close", lambda t: t.close(status))
        self._live.clear()
