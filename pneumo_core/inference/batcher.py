"""Micro-batching: concurrent requests share one forward pass.

Hand-rolled (about 40 lines) because the serving libraries that batch (TorchServe, Triton)
are whole servers; this only needs a queue and one worker thread.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

log = logging.getLogger("pneumo.batcher")


class MicroBatcher:
    """Runs ``fn`` once on the concatenation of concurrently submitted inputs.

    It waits (at most ``max_wait_s`` after the first input, up to ``max_batch`` rows) only for
    requests that are already in flight, so a lone request never waits at all."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_batch: int = 16, max_wait_s: float = 0.004,
                 timeout_s: float = 120.0) -> None:
        self.fn, self.max_batch, self.max_wait_s, self.timeout_s = fn, max_batch, max_wait_s, timeout_s
        self.q: queue.Queue = queue.Queue()
        self._inflight = 0
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="pneumo-batcher", daemon=True)
        self.thread.start()

    def submit(self, x: np.ndarray) -> np.ndarray:
        """Run ``fn`` on a (n, ...) array as part of a batch; returns its (n, ...) output rows."""
        fut: Future = Future()
        with self._lock:
            self._inflight += 1
        try:
            self.q.put((x, fut))
            return fut.result(timeout=self.timeout_s)
        finally:
            with self._lock:
                self._inflight -= 1

    def _collect(self) -> list:
        items = [self.q.get()]
        size = len(items[0][0])
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch and len(items) < self._inflight:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = self.q.get(timeout=left)
            except queue.Empty:
                break
            items.append(item)
            size += len(item[0])
        return items

    def _loop(self) -> None:
        while True:
            items = self._collect()
            try:
                out = self.fn(np.concatenate([x for x, _ in items]))
                start = 0
                for x, fut in items:
                    fut.set_result(out[start:start + len(x)])
                    start += len(x)
            except BaseException as exc:  # noqa: BLE001 - hand any failure to the callers, keep serving
                log.exception("batched forward failed")
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
