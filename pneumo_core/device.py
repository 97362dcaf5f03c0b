"""Device and precision choice: a leaf module (torch only), shared by training and inference."""
from __future__ import annotations

import contextlib
import os
from functools import lru_cache

import torch

from pneumo_core.errors import PneumoError


@lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        return "", frozenset()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("model name", ""), frozenset(fields.get("flags", "").split())


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix units (AMX or AVX512-BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_info()[1])


def cpu_vector_units() -> str:
    """The CPU's widest matrix/vector units, for logs and benchmark headers: e.g. "AMX-BF16",
    "AVX-512 BF16", "AVX-512", "AVX2" or "no AVX2"."""
    flags = cpu_info()[1]
    for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"),
                       ("avx2", "AVX2")):
        if flag in flags:
            return name
    return "no AVX2"


def cpu_has_vnni() -> bool:
    """True when the CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_info()[1])


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise PneumoError("train.device is cuda but no CUDA GPU is visible; use device: auto or cpu")
        local = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", local)
    return torch.device("cpu")


def pick_precision(choice: str, device: torch.device) -> str:
    """Resolve 'auto' to 'bf16' where the hardware runs it natively, else 'fp32'."""
    if choice != "auto":
        if choice == "fp16" and device.type == "cpu":
            return "bf16"
        return choice
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context for a resolved precision ('fp32' gives a no-op context)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
