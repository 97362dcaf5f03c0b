"""Process set-up for long-running servers (gunicorn workers, the RunPod worker)."""
from __future__ import annotations

import gc


def freeze_after_load() -> None:
    """Call once the process has loaded its Predictor: collect, then move every object alive now
    (libraries, model, app) out of the garbage collector's view.

    Without it a full collection, which Python starts on its own every few dozen requests, walks
    all of torch, timm, Flask and pydantic on the compute thread in the middle of a forward, and
    shows as a REST p99 many times the p50 (benchmarks/serve.py measures both)."""
    gc.collect()
    gc.freeze()
