"""The README's commands: which PyTorch build `make demo` installs (dry runs of make, nothing installed)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from harness import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _plan(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n", "demo", f"VENV={tmp_path / 'venv'}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _torch_install(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "pip install" in line and "torch==" in line]
    assert len(lines) == 1, out.stdout
    return lines[0]


def test_cpu_build_takes_pytorchs_cpu_wheels_and_cuda_the_default(tmp_path):
    cpu = _torch_install(_plan(tmp_path, "TORCH_BUILD=cpu"))
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in cpu and "torch==2.14.1" in cpu
    cuda = _torch_install(_plan(tmp_path, "TORCH_BUILD=cuda"))
    assert "download.pytorch.org" not in cuda and "torchvision==0.29.1" in cuda


def test_auto_follows_nvidia_smi(tmp_path):
    has_gpu = subprocess.run("nvidia-smi -L", shell=True, capture_output=True, text=True).stdout.strip() != ""
    line = _torch_install(_plan(tmp_path))
    assert ("download.pytorch.org/whl/cpu" in line) is not has_gpu


def test_unknown_build_is_a_clear_error(tmp_path):
    out = _plan(tmp_path, "TORCH_BUILD=gpu")
    assert out.returncode != 0 and "TORCH_BUILD must be auto, cpu or cuda, not 'gpu'" in out.stderr
