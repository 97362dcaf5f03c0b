"""A real gunicorn server on a free loopback port, for tests."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from harness import REPO, free_port


class LiveServer:
    def __init__(self, artifact: Path, env: dict | None = None, workers: int = 1, threads: int = 8) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PNEUMO_ARTIFACT": str(artifact), "PNEUMO_WORKERS": str(workers),
                    "PNEUMO_THREADS": str(threads), **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> "LiveServer":
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"gunicorn-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:adapters.flask_app.gunicorn_conf",
             "--bind", f"127.0.0.1:{self.port}", "adapters.flask_app.wsgi:app"],
            cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.logs()}")
            try:
                if requests.get(self.url + "/api/v1/ready", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"gunicorn not ready in {timeout}s: {self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def worker_pids(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children()]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
