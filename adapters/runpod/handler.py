"""RunPod serverless worker: ``python -u adapters/runpod/handler.py``.

The model loads once, before the worker takes its first job. Each job's ``input`` is validated
(adapters/runpod/inputs.py), URLs are fetched through a guard (adapters/runpod/fetch.py), and the
core ``Predictor`` answers with the same ``PredictResponse`` JSON as the REST API. A bad job
returns ``{"error": "<code>: <message>"}`` and the worker keeps serving.

Concurrency: the handler is ``async`` and runs the blocking work in a thread
(``asyncio.to_thread``), so the SDK can run up to ``PNEUMO_RUNPOD_CONCURRENCY`` jobs at once
(``concurrency_modifier``) and the Predictor's micro-batcher merges their forward passes.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import threading
from pathlib import Path
from typing import Any, Optional

if __package__ in (None, ""):  # run as a script: import `adapters` from this checkout, and do not
    # let this folder's modules (settings, inputs, ...) shadow top-level ones
    _HERE, _ROOT = Path(__file__).resolve().parent, str(Path(__file__).resolve().parents[2])
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)

try:
    import runpod  # noqa: E402
except ModuleNotFoundError:  # the worker's SDK is an extra
    sys.exit("pneumo runpod worker: the runpod SDK is not installed: pip install -e '.[runpod]'")

from adapters.runpod.fetch import FetchError  # noqa: E402
from adapters.runpod.inputs import InputError, load_images, parse_job_input  # noqa: E402
from adapters.runpod.settings import RunpodSettings  # noqa: E402
from pneumo_core.errors import PneumoError  # noqa: E402
from pneumo_core.inference import PredictRequest, Predictor  # noqa: E402
from pneumo_core.inference.serving_process import freeze_after_load  # noqa: E402

log = logging.getLogger("pneumo.runpod")

_lock = threading.Lock()
_settings: Optional[RunpodSettings] = None
_predictor: Optional[Predictor] = None


def get_settings() -> RunpodSettings:
    global _settings
    with _lock:
        if _settings is None:
            _settings = RunpodSettings.from_env()
        return _settings


def get_predictor() -> Predictor:
    """The worker's one Predictor, loaded on first use (``main`` loads it before serving)."""
    global _predictor
    settings = get_settings()
    with _lock:
        if _predictor is None:
            _predictor = Predictor(settings.artifact, backend=settings.serve.backend,
                                   precision=settings.serve.precision, limits=settings.limits,
                                   ood_policy=settings.serve.ood_policy)
        return _predictor


def error(code: str, message: str) -> dict:
    return {"error": f"{code}: {message}"}


def process(raw_input: Any, predictor: Predictor, settings: RunpodSettings) -> dict:
    """Answer one job's ``input`` (blocking). Returns the response dict or an error dict."""
    try:
        job = parse_job_input(raw_input, settings.serve.max_batch)
        images = load_images(job, settings.max_image_bytes, settings.fetch_policy())
        response = predictor.predict(PredictRequest(images=images, heatmap=job.heatmap, source="runpod", site=job.site))
        return response.model_dump(mode="json")
    except (InputError, FetchError, PneumoError) as exc:  # each carries its own code
        if getattr(exc, "http_status", 400) >= 500:  # a broken model or artifact: worth a log line
            log.error("job failed: %s", exc, exc_info=exc)
        return error(exc.code, str(exc))


def _process_job(raw_input: Any) -> dict:
    try:
        settings = get_settings()
        predictor = get_predictor()
    except Exception as exc:  # bad configuration or artifact: report it on every job
        log.exception("cannot load the model")
        return error("worker_not_ready", f"the model could not be loaded ({exc})")
    return process(raw_input, predictor, settings)


async def handler(job: dict) -> dict:
    """RunPod entry point: never raises; a failure is ``{"error": ...}`` for this job only."""
    try:
        raw = job.get("input") if isinstance(job, dict) else None
        return await asyncio.to_thread(_process_job, raw)
    except Exception:
        log.exception("unexpected error in job %s", job.get("id") if isinstance(job, dict) else "?")
        return error("internal_error", "the worker failed on this job; it has been logged")


def concurrency_modifier(current: int) -> int:
    """How many jobs this worker runs at once (constant: PNEUMO_RUNPOD_CONCURRENCY)."""
    del current
    return get_settings().concurrency


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        predictor = get_predictor()  # load and warm up before the first job
    except Exception as exc:
        sys.exit(f"pneumo runpod worker: cannot start: {exc}")
    log.info("model %s %s loaded (%s)", predictor.info.name, predictor.info.version, predictor.info.backend)
    freeze_after_load()
    runpod.serverless.start({"handler": handler, "concurrency_modifier": concurrency_modifier})


if __name__ == "__main__":
    main()
