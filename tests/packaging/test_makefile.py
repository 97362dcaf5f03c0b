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


def test_cpu_build_asks_the_cpu_wheel_index_when_it_answers_and_cuda_the_default(tmp_path):
    import socket

    with socket.socket() as index:  # a reachable stand-in for download.pytorch.org
        index.bind(("127.0.0.1", 0))
        index.listen()
        url = f"http://127.0.0.1:{index.getsockname()[1]}/whl/cpu"
        cpu = _torch_install(_plan(tmp_path, "TORCH_BUILD=cpu", f"TORCH_CPU_INDEX={url}"))
        assert f"--extra-index-url {url}" in cpu and "torch==2.14.1" in cpu
        cuda = _torch_install(_plan(tmp_path, "TORCH_BUILD=cuda", f"TORCH_CPU_INDEX={url}"))
        assert "--extra-index-url" not in cuda and "torchvision==0.29.1" in cuda
    offline = _torch_install(_plan(tmp_path, "TORCH_BUILD=cpu", f"TORCH_CPU_INDEX={url}"))  # closed now
    assert "--extra-index-url" not in offline, "an unreachable index is not handed to pip to retry"


def test_auto_follows_nvidia_smi(tmp_path):
    has_gpu = subprocess.run("nvidia-smi -L", shell=True, capture_output=True).returncode == 0
    out = _plan(tmp_path)
    assert f"({'cuda' if has_gpu else 'cpu'} build;" in out.stdout, out.stdout


def test_unknown_build_is_a_clear_error(tmp_path):
    out = _plan(tmp_path, "TORCH_BUILD=gpu")
    assert out.returncode != 0 and "TORCH_BUILD must be auto, cpu or cuda, not 'gpu'" in out.stderr
