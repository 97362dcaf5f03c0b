"""Test harness shared by test modules: repo path, CI-aware skipping, free ports, the CLI."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally when a system part is missing; in CI (CI=true) fail instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_module(name: str, hint: str):
    """Import and return module ``name``. Missing: the calling test module is skipped locally and
    fails to collect in CI, like :func:`require`. Call it at module level."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if IN_CI:
            raise ImportError(f"required in CI: {hint} ({exc})") from exc
        pytest.skip(hint, allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, timeout: float = 300, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``pneumo ARGS`` in a subprocess of this interpreter."""
    return subprocess.run([sys.executable, "-m", "pneumo_core.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or REPO, env={**os.environ, **(env or {})})
