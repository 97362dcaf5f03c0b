"""Run the REST API under gunicorn in the background on a port the OS picks (for tests and
benchmarks), and the gunicorn command line ``pneumo serve`` runs in the foreground."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


def gunicorn_command(bind: str) -> list[str]:
    """The gunicorn invocation of the pneumo app with pneumo's gunicorn settings."""
    return [sys.executable, "-m", "gunicorn", "-c", "python:adapters.flask_app.gunicorn_conf",
            "--bind", bind, "adapters.flask_app.wsgi:app"]


class BackgroundServer:
    """gunicorn on 127.0.0.1, port 0: the OS picks a free port and the log says which, so two
    servers never race for one port. ``start()`` returns once ``/api/v1/ready`` answers 200."""

    def __init__(self, artifact: Path, env: Optional[dict] = None, workers: int = 1, threads: int = 8) -> None:
        self.env = {**os.environ, "PNEUMO_ARTIFACT": str(artifact), "PNEUMO_WORKERS": str(workers),
                    "PNEUMO_THREADS": str(threads), **(env or {})}
        self.proc: Optional[subprocess.Popen] = None
        self.log = None
        self.port = 0
        self.url = ""

    def start(self, timeout: float = 120) -> "BackgroundServer":
        self.log = tempfile.NamedTemporaryFile("w+", prefix="pneumo-gunicorn-", suffix=".log")
        self.proc = subprocess.Popen(gunicorn_command("127.0.0.1:0"), cwd=REPO, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}: {self.logs()}")
            if not self.port:
                found = _LISTENING.search(self.logs(tail=None))
                if found:
                    self.port = int(found.group(1))
                    self.url = f"http://127.0.0.1:{self.port}"
            elif self._ready():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"gunicorn not ready in {timeout}s: {self.logs()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/api/v1/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def logs(self, tail: Optional[int] = 4000) -> str:
        """The server's log so far (its last ``tail`` characters)."""
        if self.log is None:
            return ""
        self.log.flush()
        self.log.seek(0)
        text = self.log.read()
        return text[-tail:] if tail else text

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
        if self.log is not None:
            self.log.close()
