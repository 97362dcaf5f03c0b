"""Concurrent decodes of large images stay within the process's decode memory budget."""
from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pneumo_core.imaging import load_image
from pneumo_core.imaging.budget import DecodeBudget, DecoderBusyError


def _rgba_png(side: int) -> bytes:
    """A small file that decodes to side x side RGBA: the amplification of issue #14 item 6."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((side, side, 4), np.uint8)).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def test_concurrent_large_decodes_run_one_at_a_time_within_the_budget(monkeypatch):
    from pneumo_core.imaging import decode

    budget = DecodeBudget(max_bytes=60 * 2**20)
    monkeypatch.setattr(decode, "BUDGET", budget)
    inside, most = [0], [0]
    lock = threading.Lock()
    real = decode._decode_pil_pixels

    def counting(*args):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)  # long enough for the other threads to try to start
        try:
            return real(*args)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(decode, "_decode_pil_pixels", counting)
    png = _rgba_png(1500)  # about 47 MB of PIL copies estimated, a few kB on disk
    assert len(png) < 100_000
    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda i: load_image(png, name=f"big{i}.png"), range(4)))
    assert all(d.pixels.shape == (1500, 1500) for d in out)
    assert most[0] == 1, f"{most[0]} large decodes ran at once"
    assert budget.held == 0
    small = _rgba_png(200)  # small ones share the budget
    most[0] = 0
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: load_image(small), range(8)))
    assert most[0] > 1


def test_an_image_larger_than_the_budget_still_decodes_alone(monkeypatch):
    budget = DecodeBudget(max_bytes=2 * 2**20)
    monkeypatch.setattr("pneumo_core.imaging.decode.BUDGET", budget)
    assert load_image(_rgba_png(1000)).pixels.shape == (1000, 1000)
    assert budget.peak == budget.max_bytes and budget.held == 0


def test_a_full_budget_answers_busy_instead_of_waiting_forever():
    budget = DecodeBudget(max_bytes=100, wait_s=0.2)
    entered = threading.Event()
    release = threading.Event()

    def hold():
        with budget.reserve(100, "first"):
            entered.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(5)
    t0 = time.monotonic()
    with pytest.raises(DecoderBusyError, match="second: the server is decoding other large images"):
        with budget.reserve(50, "second"):
            pass
    assert time.monotonic() - t0 < 3
    release.set()
    t.join()
    with budget.reserve(50, "third"):  # free again
        assert budget.held == 50
