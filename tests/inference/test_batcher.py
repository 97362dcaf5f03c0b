"""MicroBatcher: batches concurrent inputs; other jobs run on the same thread, in order."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout

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


def test_a_caller_that_times_out_cancels_its_queued_work():
    started, release = threading.Event(), threading.Event()
    ran: list[int] = []
    b = MicroBatcher(lambda x: ran.append(len(x)) or x, timeout_s=0.2)
    with ThreadPoolExecutor(2) as pool:
        pool.submit(b.call, lambda: (started.set(), release.wait()), None)  # no limit: holds the thread
        started.wait(10)
        with pytest.raises(FuturesTimeout):
            b.submit(np.ones((1, 2)))
        release.set()
    assert b.call(lambda: "still serving") == "still serving"
    assert ran == [], "the forward whose caller gave up was skipped"
    b.close()


def test_close_answers_work_queued_before_it_and_refuses_later_work():
    started, release = threading.Event(), threading.Event()
    b = MicroBatcher(lambda x: x, timeout_s=30)
    with ThreadPoolExecutor(3) as pool:
        pool.submit(b.call, lambda: (started.set(), release.wait()))
        started.wait(10)
        queued = pool.submit(b.call, lambda: "never")
        _wait_until(lambda: b.q.qsize() == 1)
        closer = pool.submit(b.close)
        _wait_until(lambda: b.q.qsize() == 2)  # the stop marker is behind the queued job
        release.set()
        closer.result(timeout=10)
        assert queued.result(timeout=10) == "never"  # queued before close: still answered
    assert not b.alive
    with pytest.raises(RuntimeError, match="closed"):
        b.call(lambda: 1)


def test_jobs_may_use_the_batcher_they_run_on():
    b = MicroBatcher(lambda x: x + 1)
    assert b.call(lambda: float(b.submit(np.zeros((1, 1)))[0, 0]) + b.call(lambda: 10)) == 11.0
    b.close()


def test_inputs_without_a_batch_dimension_are_refused_in_the_callers_thread():
    b = MicroBatcher(lambda x: x)
    with pytest.raises(ValueError, match="batch dimension"):
        b.submit(np.float32(1.0))
    assert b.alive and b.call(lambda: "ok") == "ok"
    b.close()
