"""The web page in real headless Chromium (Debian's /usr/bin/chromium driven by playwright)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import require
from live_server import LiveServer

CHROMIUM = os.environ.get("PNEUMO_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    require(Path(CHROMIUM).is_file(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    import importlib.util

    require(importlib.util.find_spec("playwright") is not None, "the playwright package is not installed")
    from playwright import sync_api
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(smoke_artifact):
    srv = LiveServer(smoke_artifact).start()
    yield srv
    srv.stop()


def test_upload_shows_result_and_overlay(browser, server, phantom_png, tmp_path):
    image = tmp_path / "synthetic-chest.png"
    image.write_bytes(phantom_png)
    page = browser.new_page(viewport={"width": 1200, "height": 820})
    page.goto(server.url + "/")
    assert "Not for clinical use" in page.inner_text(".banner")
    assert page.is_disabled("#submit")
    page.set_input_files("#file", str(image))
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    label = page.inner_text("#label")
    assert label in ("NORMAL", "PNEUMONIA")
    prob = float(page.inner_text("#probability"))
    thr = float(page.inner_text("#threshold"))
    assert 0 <= prob <= 1 and 0 < thr < 1
    assert label == ("PNEUMONIA" if prob >= thr else "NORMAL")
    page.wait_for_function("document.getElementById('overlay').naturalWidth > 0", timeout=30_000)
    assert page.is_visible("#overlay")
    shot = Path(os.environ.get("PNEUMO_SCREENSHOT", tmp_path / "web-page.png"))
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def test_bad_file_shows_clear_message(browser, server, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not an X-ray")
    page = browser.new_page()
    page.goto(server.url + "/")
    page.set_input_files("#file", str(bad))
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "unsupported image format" in page.inner_text("#error")
    assert page.is_hidden("#result")
    page.close()


def test_an_out_of_distribution_image_shows_the_banner(browser, server, phantom_png, tmp_path):
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[:128, :128]
    board = tmp_path / "checkerboard.png"
    Image.fromarray((((yy // 16 + xx // 16) % 2) * 255).astype(np.uint8)).save(board)
    xray = tmp_path / "xray.png"
    xray.write_bytes(phantom_png)
    page = browser.new_page()
    page.goto(server.url + "/")
    page.set_input_files("#file", str(board))
    page.click("#submit")
    page.wait_for_selector("#ood:not([hidden])", timeout=60_000)
    assert "Not like the chest X-rays" in page.inner_text("#ood")
    assert "more unusual than" in page.inner_text("#ood-score")
    page.set_input_files("#file", str(xray))  # a radiograph afterwards clears the banner
    page.click("#submit")
    page.wait_for_function("document.getElementById('ood').hidden === true", timeout=60_000)
    page.close()
