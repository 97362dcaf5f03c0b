"""Micro-batching: concurrent requests share one forward pass.

Hand-rolled (about 40 lines) because the serving libraries that batch (TorchServe, Triton)
are whole servers; this only needs a queue and one worker thread.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable

import numpy as np


class MicroBatcher:
    """Collects inputs for up to ``max_wait_s`` or ``max_batch`` items, then runs ``fn`` once."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_batch: int = 16, max_wait_s: float = 0.004) -> None:
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self.q: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="pneumo-batcher", daemon=True)
        self.thread.start()

    def submit(self, x: np.ndarray) -> np.ndarray:
        """Run ``fn`` on a (n, ...) array as part of a batch; returns its (n, ...) output rows."""
        fut: Future = Future()
        self.q.put((x, fut))
        return fut.result()

    def _loop(self) -> None:
        while True:
            items = [self.q.get()]
            size = len(items[0][0])
            while size < self.max_batch:
                try:
                    item = self.q.get(timeout=self.max_wait_s)
                except queue.Empty:
                    break
                items.append(item)
                size += len(item[0])
            try:
                out = self.fn(np.concatenate([x for x, _ in items]))
                start = 0
                for x, fut in items:
                    fut.set_result(out[start:start + len(x)])
                    start += len(x)
            except Exception as exc:  # hand the failure to every waiting caller
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
