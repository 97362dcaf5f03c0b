"""The worker as RunPod's SDK runs it: ``--test_input`` and the local API server (real processes)."""
from __future__ import annotations

import base64
import subprocess
import sys
import time

import pytest
import requests

from harness import REPO, free_port

HANDLER = "adapters/runpod/handler.py"
CORRUPT_PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x07" * 200).decode()


def test_test_input_runs_one_job_and_exits(worker_env):
    """``--test_input``: the SDK runs the job, logs ``Job result: {...}`` and exits 0; an error
    result is logged as ``Job local_test failed with error: ...`` and exits 1."""
    job = (REPO / "adapters" / "runpod" / "test_input.json").read_text()
    proc = subprocess.run([sys.executable, HANDLER, "--test_input", job], cwd=REPO, env=worker_env,
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Job local_test completed successfully." in out
    result_line = next(line for line in out.splitlines() if "Job result:" in line)
    assert "'results': [{'name': 'phantom-pneumonia-96.png', 'label': " in result_line
    assert "'positive_class': 'PNEUMONIA'" in result_line


@pytest.fixture(scope="module")
def api_server(worker_env, tmp_path_factory):
    """``handler.py --rp_serve_api`` on 127.0.0.1; yields its base URL; always terminated."""
    port = free_port()
    log = (tmp_path_factory.mktemp("rp-api") / "server.log").open("w+")
    proc = subprocess.Popen([sys.executable, HANDLER, "--rp_serve_api", "--rp_api_port", str(port),
                             "--rp_api_host", "127.0.0.1"], cwd=REPO, env=worker_env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"API server exited with {proc.returncode}:\n{log.read()[-4000:]}")
            try:
                if requests.get(f"{base}/docs", timeout=2, allow_redirects=False).status_code in (200, 307):
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"API server did not answer within 90 s:\n{log.read()[-4000:]}")
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def runsync(base: str, job_input) -> dict:
    resp = requests.post(f"{base}/runsync", json={"input": job_input}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_runsync_good_and_bad(api_server, phantom_b64):
    ok = runsync(api_server, {"image": phantom_b64, "name": "a.png"})
    assert ok["status"] == "COMPLETED", ok
    assert ok["output"]["results"][0]["name"] == "a.png"
    assert ok["output"]["model"]["positive_class"] == "PNEUMONIA"
    bad = runsync(api_server, {"image": phantom_b64, "size": 512})
    assert bad["status"] == "FAILED" and "output" not in bad
    assert bad["error"].startswith("invalid_input: ") and "allowed keys" in bad["error"]


def test_corrupt_image_fails_and_next_job_succeeds(api_server, phantom_b64):
    bad = runsync(api_server, {"image": CORRUPT_PNG, "name": "corrupt.png"})
    assert bad["status"] == "FAILED"
    assert bad["error"].startswith("unreadable_image: corrupt.png: cannot read image")
    ok = runsync(api_server, {"images": [{"image": phantom_b64}, {"image": phantom_b64}], "heatmap": True})
    assert ok["status"] == "COMPLETED", ok
    assert len(ok["output"]["results"]) == 2 and ok["output"]["results"][1]["heatmap_png_base64"]


def test_run_then_status(api_server, phantom_b64):
    """The local server's /run only queues the job; POST /status/{id} runs it and answers."""
    queued = requests.post(f"{api_server}/run", json={"input": {"image": phantom_b64}}, timeout=30).json()
    assert queued["status"] == "IN_PROGRESS" and queued["id"]
    status = {}
    for _ in range(20):  # bounded poll
        status = requests.post(f"{api_server}/status/{queued['id']}", timeout=60).json()
        if status["status"] in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.25)
    assert status["status"] == "COMPLETED", status
    assert status["output"]["results"][0]["name"] == "image"
    failed = requests.post(f"{api_server}/run", json={"input": {"image": "***"}}, timeout=30).json()
    status = requests.post(f"{api_server}/status/{failed['id']}", timeout=60).json()
    assert status["status"] == "FAILED" and status["error"].startswith("invalid_input: ")
