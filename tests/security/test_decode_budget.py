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


def test_concurrent_large_decodes_never_exceed_the_budget(monkeypatch):
    budget = DecodeBudget(max_bytes=40 * 2**20)
    monkeypatch.setattr("pneumo_core.imaging.decode.BUDGET", budget)
    png = _rgba_png(1500)  # about 40 MB of PIL copies estimated, a few kB on disk
    assert len(png) < 100_000
    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda i: load_image(png, name=f"big{i}.png"), range(4)))
    assert all(d.pixels.shape == (1500, 1500) for d in out)
    assert 0 < budget.peak <= budget.max_bytes, "two large decodes ran at once"
    assert budget.held == 0


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
