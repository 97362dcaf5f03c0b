"""MicroBatcher: batches concurrent inputs; other jobs run on the same thread, in order."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pneumo_core.inference.batcher import MicroBatcher


def test_call_runs_on_the_compute_thread_and_raises_the_jobs_error():
    b = MicroBatcher(lambda x: x * 2)
    assert b.call(lambda: threading.current_thread().name) == "pneumo-compute"
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)
    np.testing.assert_array_equal(b.submit(np.ones((2, 3))), np.full((2, 3), 2.0))  # still serving
    b.close()
    assert not b.thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(np.ones((1, 3)))


def _wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_job_queued_between_inputs_runs_after_their_batch():
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def forward(x):
        order.append(f"forward {len(x)}")
        return x

    b = MicroBatcher(forward, max_wait_s=0.5)
    with ThreadPoolExecutor(5) as pool:
        pool.submit(b.call, lambda: (started.set(), release.wait()))  # hold the compute thread
        started.wait(10)
        first = pool.submit(b.submit, np.full((1, 2), 0))
        _wait_until(lambda: b.q.qsize() == 1)
        job = pool.submit(b.call, lambda: order.append("job"))
        _wait_until(lambda: b.q.qsize() == 2)
        rest = [pool.submit(b.submit, np.full((1, 2), i)) for i in (1, 2)]
        _wait_until(lambda: b.q.qsize() == 4)
        release.set()
        rows = [f.result(timeout=10) for f in [first, *rest]]
        job.result(timeout=10)
    assert [r[0, 0] for r in rows] == [0, 1, 2]
    assert order == ["forward 3", "job"]
    b.close()
