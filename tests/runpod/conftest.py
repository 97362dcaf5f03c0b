"""Fixtures for the RunPod worker tests: one Predictor, a local image server, subprocess env."""
from __future__ import annotations

import base64
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import REPO


@pytest.fixture(scope="session")
def rp_predictor(smoke_artifact):
    """One Predictor over the smoke artifact for every in-process handler test."""
    from pneumo_core.inference import Predictor

    return Predictor(smoke_artifact)


@pytest.fixture()
def rp_settings(smoke_artifact):
    """Settings as the worker reads them, with no environment overrides."""
    from adapters.runpod.settings import RunpodSettings

    return RunpodSettings.from_env({"PNEUMO_ARTIFACT": str(smoke_artifact)})


@pytest.fixture(scope="session")
def phantom_b64(phantom_png) -> str:
    return base64.b64encode(phantom_png).decode()


@pytest.fixture(scope="session")
def worker_env(smoke_artifact) -> dict:
    """Environment for worker subprocesses: the smoke artifact, quiet SDK logs, no RunPod vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "PNEUMO_"))}
    env.update(PNEUMO_ARTIFACT=str(smoke_artifact), RUNPOD_LOG_LEVEL="INFO", NO_ALBUMENTATIONS_UPDATE="1",
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    return env


class _ImageHandler(BaseHTTPRequestHandler):
    """Routes: /x.png (the phantom), /big (Content-Length over the limit), /big-stream (no
    Content-Length, streamed), /redirect -> /x.png, /redirect-metadata, /loop, /slow, else 404."""

    png: bytes = b""
    hits: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        if self.path == "/x.png":
            self._send(200, self.png, {"Content-Type": "image/png"})
        elif self.path == "/big":
            self._send(200, self.png + b"\0" * 4096, {"Content-Type": "image/png"})
        elif self.path == "/big-stream":  # HTTP/1.0 style: no Content-Length, body until close
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for _ in range(8):
                    self.wfile.write(b"\0" * 1024)
                    self.wfile.flush()
            except OSError:
                pass
        elif self.path == "/redirect":
            self._send(302, b"", {"Location": "/x.png"})
        elif self.path == "/redirect-metadata":
            self._send(302, b"", {"Location": "http://169.254.169.254/latest/meta-data"})
        elif self.path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif self.path == "/slow":  # a byte every 0.1 s for up to 3 s
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(30):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        else:
            self._send(404, b"not found", {"Content-Type": "text/plain"})

    def _send(self, status: int, body: bytes, headers: dict) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="session")
def image_server(phantom_png):
    """A local http.server on 127.0.0.1 (loopback only) serving the phantom PNG; yields its base URL."""
    handler = type("Handler", (_ImageHandler,), {"png": phantom_png, "hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
