"""The compute thread: all of a predictor's model work, with micro-batching of concurrent requests.

Why one thread owns every forward (and Grad-CAM, and the model build): libgomp gives each thread
that starts an OpenMP region its own worker pool, and once it manages more threads than there are
cores it cuts its spin-wait to almost nothing, so a forward issued from a second thread runs
markedly slower on a machine with few cores. Keeping the model on one thread keeps the pool
count at one.

Hand-rolled (about 60 lines) because the serving libraries that batch (TorchServe, Triton)
are whole servers; this only needs a queue and one worker thread.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any, Callable, Optional, TypeVar

import numpy as np

log = logging.getLogger("pneumo.batcher")
T = TypeVar("T")
_FORWARD, _CALL, _STOP = "forward", "call", "stop"


class MicroBatcher:
    """Runs ``fn`` once on the concatenation of concurrently submitted inputs, and runs other
    jobs (``call``) on the same thread, in submission order.

    It waits (at most ``max_wait_s`` after the first input, up to ``max_batch`` rows) only for
    requests that are already in flight, so a lone request never waits at all. A caller that
    gives up after ``timeout_s`` cancels its work if it has not started yet."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_batch: int = 16, max_wait_s: float = 0.004,
                 timeout_s: float = 120.0) -> None:
        self.fn, self.max_batch, self.max_wait_s, self.timeout_s = fn, max_batch, max_wait_s, timeout_s
        self.q: queue.Queue = queue.Queue()
        self._later: collections.deque = collections.deque()  # jobs that arrived while a batch formed
        self._current: list = []  # what the thread holds now, failed if anything unexpected happens
        self._inflight = 0
        self._closed = False
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="pneumo-compute", daemon=True)
        self.thread.start()

    @property
    def alive(self) -> bool:
        """True while the thread serves (not closed, not crashed)."""
        return not self._closed and self.thread.is_alive()

    def submit(self, x: np.ndarray) -> np.ndarray:
        """Run ``fn`` on a (n, ...) array as part of a batch; returns its (n, ...) output rows."""
        if np.ndim(x) == 0:
            raise ValueError("submit needs an array with a leading batch dimension")
        with self._lock:
            self._inflight += 1
        try:
            return self._wait(_FORWARD, x, self.timeout_s)
        finally:
            with self._lock:
                self._inflight -= 1

    def call(self, job: Callable[[], T], timeout_s: Optional[float] = -1.0) -> T:
        """Run ``job()`` on the compute thread and return its result (or raise its exception).
        ``timeout_s``: seconds to wait; negative means the batcher's ``timeout_s``, None no limit."""
        return self._wait(_CALL, job, self.timeout_s if timeout_s is not None and timeout_s < 0 else timeout_s)

    def close(self) -> None:
        """Stop the thread after the work already queued; later submissions raise RuntimeError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.q.put((_STOP, None, None))
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=self.timeout_s)

    def _wait(self, kind: str, payload: Any, timeout_s: Optional[float]) -> Any:
        if threading.current_thread() is self.thread:  # a job asking for more work: run it in place
            return payload() if kind == _CALL else self.fn(payload)
        fut: Future = Future()
        with self._lock:  # atomic with close(): nothing is queued behind the stop marker
            if self._closed:
                raise RuntimeError("this predictor was closed; create a new one")
            self.q.put((kind, payload, fut))
        try:
            return fut.result(timeout=timeout_s)
        except FuturesTimeout:
            fut.cancel()  # not started yet: the thread skips it
            raise

    def _next(self) -> tuple:
        return self._later.popleft() if self._later else self.q.get()

    def _collect(self) -> list:
        first = self._next()
        self._current = [first]
        if first[0] != _FORWARD:
            return self._current
        size = len(first[1])
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch and len(self._current) < self._inflight:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = self.q.get(timeout=left)
            except queue.Empty:
                break
            if item[0] != _FORWARD:
                self._later.append(item)
                continue
            self._current.append(item)
            size += len(item[1])
        return self._current

    def _loop(self) -> None:
        while True:
            try:
                items = self._collect()
                kind, payload, fut = items[0]
                if kind == _STOP:
                    self._fail_queued(RuntimeError("this predictor was closed; create a new one"))
                    return
                items = [it for it in items if it[2].set_running_or_notify_cancel()]  # drop cancelled
                if not items:
                    continue
                if kind == _CALL:
                    try:
                        result = payload()
                    except BaseException as exc:  # noqa: BLE001 - the caller re-raises it
                        fut.set_exception(exc)
                    else:
                        fut.set_result(result)
                    continue
                out = self.fn(items[0][1] if len(items) == 1 else np.concatenate([x for _, x, _ in items]))
                start = 0
                for _, x, f in items:
                    f.set_result(out[start:start + len(x)])
                    start += len(x)
            except BaseException as exc:  # noqa: BLE001 - hand any failure to the callers, keep serving
                log.exception("work on the compute thread failed")
                for _, _, f in self._current:
                    if f is not None and not f.done() and (f.running() or f.set_running_or_notify_cancel()):
                        f.set_exception(exc)

    def _fail_queued(self, exc: Exception) -> None:
        pending = list(self._later)
        self._later.clear()
        while True:
            try:
                pending.append(self.q.get_nowait())
            except queue.Empty:
                break
        for _, _, f in pending:
            if f is not None and f.set_running_or_notify_cancel():
                f.set_exception(exc)
