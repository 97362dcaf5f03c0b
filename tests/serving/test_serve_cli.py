"""`pneumo serve`: the README's main command starts gunicorn, and refuses bad input up front."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests

from harness import REPO, free_port, run_cli


@pytest.mark.parametrize("backend", ["auto", "onnx"])
def test_serve_prints_its_urls_and_answers(smoke_artifact, phantom_png, tmp_path, backend):
    """The README's `pneumo serve` and `pneumo serve --backend onnx` (exported on demand)."""
    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "PNEUMO_CACHE_DIR": str(tmp_path / "cache")}
    with log.open("w") as out:  # a file, not a pipe: gunicorn's access log can never block on it
        proc = subprocess.Popen([sys.executable, "-m", "pneumo_core.cli.main", "serve", "--artifact",
                                 str(smoke_artifact), "--port", str(port), "--backend", backend], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            try:
                if requests.get(url + "/api/v1/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        lines = log.read_text().splitlines()
        assert f"pneumo: web page  {url}/" in lines and f"pneumo: Swagger UI {url}/api/v1/docs" in lines
        r = requests.post(url + "/api/v1/predict", files={"file": ("x.png", phantom_png, "image/png")}, timeout=60)
        assert r.status_code == 200 and r.json()["model"]["name"] == "smoke"
        if backend == "onnx":
            assert r.json()["model"]["backend"] == "onnx"
            assert list((tmp_path / "cache").rglob("*.onnx")), "the ONNX export went to PNEUMO_CACHE_DIR"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_serve_refuses_a_missing_artifact_before_starting(tmp_path):
    out = run_cli("serve", "--artifact", str(tmp_path / "nope"), "--port", str(free_port()), timeout=60)
    assert out.returncode == 2 and "artifact folder not found" in out.stderr
    assert "pneumo: web page" not in out.stdout and "Traceback" not in out.stderr


def test_serve_int8_without_export_says_how(smoke_artifact, tmp_path):
    art = tmp_path / "artifact"
    shutil.copytree(smoke_artifact, art)
    out = run_cli("serve", "--artifact", str(art), "--backend", "onnx-int8", "--port", str(free_port()), timeout=60)
    assert out.returncode == 2 and "pneumo export" in out.stderr and "Traceback" not in out.stderr


def test_serve_rejects_zero_workers(smoke_artifact):
    out = run_cli("serve", "--artifact", str(smoke_artifact), "--workers", "0", timeout=60)
    assert out.returncode == 2 and "must be 1 or more" in out.stderr


def test_serve_on_a_busy_port_says_so_and_how_to_pick_another(smoke_artifact):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = run_cli("serve", "--artifact", str(smoke_artifact), "--port", str(port), timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in out.stderr
    assert f"make demo PORT={port + 1}" in out.stderr
    assert "web page" not in out.stdout, "no URL is printed for a server that cannot start"
