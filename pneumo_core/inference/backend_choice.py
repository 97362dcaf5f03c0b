"""``--backend auto``: measure the available backends on this machine and keep the fastest one
whose calibrated probabilities match PyTorch fp32.

At load, every candidate runs the same reference inputs: its largest probability change against
torch fp32 must stay within ``tolerance`` (default 0.02), and its median latency for one image
over a short warm-up decides among those that pass. With CUDA visible the choice is PyTorch on
the GPU (fp16/bf16, measured against fp32 on the CPU). bf16 on a CPU is only a candidate where
the CPU has native bf16 units; an explicit ``--precision bf16`` elsewhere is served, with a
warning that states its measured cost.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import numpy as np
import torch

from pneumo_core.artifact.store import ONNX_FILES, Artifact
from pneumo_core.data.preprocess import to_input
from pneumo_core.device import cpu_has_bf16
from pneumo_core.inference.backends import OnnxBackend, OpenVinoBackend, TorchBackend, installed
from pneumo_core.inference.calibration import apply_temperature
from pneumo_core.inference.schema import BackendCandidate, BackendSelection

log = logging.getLogger("pneumo.backend")
Backend = Callable[[np.ndarray], np.ndarray]
TOLERANCE = 0.02


def reference_inputs(art: Artifact, n: int = 6) -> np.ndarray:
    """``n`` fixed, X-ray-like inputs (smooth structures at several contrasts), preprocessed as
    the artifact serves: the same on every machine, so choices are comparable."""
    import cv2

    prep, rng = art.meta.preprocessing, np.random.default_rng(20261202)
    out = []
    for i in range(n):
        coarse = rng.random((6 + i, 6 + i)).astype(np.float32)
        smooth = cv2.resize(coarse, (prep.image_size, prep.image_size), interpolation=cv2.INTER_CUBIC)
        smooth += 0.15 * rng.standard_normal(smooth.shape).astype(np.float32)
        img = np.clip((smooth - smooth.min()) / (np.ptp(smooth) + 1e-6) * (120 + 25 * i) + 20 * i, 0, 255)
        out.append(to_input(img.astype(np.uint8), prep))
    return np.stack(out)


def median_ms(backend: Backend, x: np.ndarray, budget_s: float = 1.0, max_runs: int = 20) -> float:
    """Median wall time of one forward of ``x`` after two warm-up calls, within ``budget_s``."""
    backend(x)
    backend(x)
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < max_runs and (len(times) < 3 or time.perf_counter() < end):
        t0 = time.perf_counter()
        backend(x)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def _candidates(art: Artifact, model: torch.nn.Module) -> list[tuple[str, Callable[[], Backend], str]]:
    """(name, factory, why it is unavailable or '') for every backend this machine might run."""
    from pneumo_core.inference.onnx_export import onnx_model_for

    def onnx_file():
        return onnx_model_for(art, model)

    int8 = art.folder / ONNX_FILES["onnx-int8"]
    return [
        ("torch-bf16", lambda: TorchBackend(model, "bf16"),
         "" if cpu_has_bf16() else "the CPU has no native bf16 (AMX or AVX512-BF16): emulated bf16 is slow"),
        ("onnx", lambda: OnnxBackend(onnx_file()), "" if installed("onnxruntime") else "onnxruntime not installed"),
        ("openvino", lambda: OpenVinoBackend(onnx_file()), "" if installed("openvino") else "openvino not installed"),
        ("openvino-bf16", lambda: OpenVinoBackend(onnx_file(), precision="bf16"),
         "openvino not installed" if not installed("openvino") else "" if cpu_has_bf16() else
         "the CPU has no native bf16 (AMX or AVX512-BF16)"),
        ("onnx-int8", lambda: OnnxBackend(int8, name="onnx-int8"),
         "onnxruntime not installed" if not installed("onnxruntime") else
         "" if int8.is_file() else "no model.int8.onnx in the artifact (pneumo export --format onnx-int8)"),
    ]


def max_change(backend: Backend, art: Artifact, model: torch.nn.Module) -> float:
    """Largest calibrated-probability change of ``backend`` against torch fp32 on the reference inputs."""
    x = reference_inputs(art)
    p_ref = apply_temperature(TorchBackend(model, "fp32")(x), art.temperature)
    return float(np.abs(apply_temperature(backend(x), art.temperature) - p_ref).max())


def choose_backend(art: Artifact, model: torch.nn.Module, tolerance: float = TOLERANCE,
                   precision: str = "auto") -> tuple[Backend, BackendSelection]:
    """The fastest accurate backend for ``model`` on this machine, and the record of the choice.
    ``precision="fp32"`` keeps to fp32 backends (and int8, which is judged by its drift)."""
    x = reference_inputs(art)
    reference = TorchBackend(model, "fp32")
    p_ref = apply_temperature(reference(x), art.temperature)
    one = x[:1]
    rows: list[BackendCandidate] = []
    if torch.cuda.is_available():
        try:
            cuda = TorchBackend(model, "fp32" if precision == "fp32" else "auto", device="cuda")
            drift = float(np.abs(apply_temperature(cuda(x), art.temperature) - p_ref).max())
        except Exception as exc:  # a GPU that fails (memory, driver) leaves the CPU backends
            rows.append(BackendCandidate(name="torch-cuda", status="unavailable", note=f"failed: {exc}"[:300]))
        else:
            if drift <= tolerance:
                row = BackendCandidate(name=cuda.name, status="chosen", p50_ms=median_ms(cuda, one),
                                       max_prob_change=drift)
                return cuda, _record(row, [row], tolerance, "a CUDA GPU is visible")
            rows.append(BackendCandidate(name=cuda.name, status="inaccurate", max_prob_change=drift,
                                         note=f"probabilities move by {drift:.4f} > {tolerance}"))
    rows.insert(0, BackendCandidate(name=reference.name, status="accurate", p50_ms=median_ms(reference, one),
                                    max_prob_change=0.0, note="the reference"))
    backends: dict[str, Backend] = {reference.name: reference}
    for name, factory, unavailable in _candidates(art, model):
        if precision == "fp32" and "bf16" in name:
            unavailable = "precision fp32 was asked for"
        if unavailable:
            rows.append(BackendCandidate(name=name, status="unavailable", note=unavailable))
            continue
        try:
            backend = factory()
            drift = float(np.abs(apply_temperature(backend(x), art.temperature) - p_ref).max())
        except Exception as exc:  # a backend that cannot load here is skipped, with the reason
            rows.append(BackendCandidate(name=name, status="unavailable", note=f"failed to load: {exc}"[:300]))
            continue
        if not np.isfinite(drift) or drift > tolerance:
            rows.append(BackendCandidate(name=name, status="inaccurate", max_prob_change=drift,
                                         note=f"probabilities move by {drift:.4f} > {tolerance}"))
            continue
        rows.append(BackendCandidate(name=name, status="accurate", p50_ms=median_ms(backend, one), max_prob_change=drift))
        backends[name] = backend
    best = min((r for r in rows if r.status == "accurate"), key=lambda r: r.p50_ms)
    best.status = "chosen"
    ref_ms = rows[0].p50_ms
    why = (f"fastest accurate backend: {best.p50_ms:.1f} ms per image vs {ref_ms:.1f} ms torch-fp32"
           if best.name != reference.name else "no other backend was both available and faster within tolerance")
    return backends[best.name], _record(best, rows, tolerance, why)


def _record(best: BackendCandidate, rows: list[BackendCandidate], tolerance: float, why: str) -> BackendSelection:
    selection = BackendSelection(chosen=best.name, reason=why, tolerance=tolerance, candidates=rows)
    log.info("backend auto: %s (%s); %s", best.name, why,
             "; ".join(f"{r.name} {r.status}" + (f" {r.p50_ms:.1f} ms" if r.p50_ms is not None else "")
                       + (f" ({r.note})" if r.note and r.status != "accurate" else "") for r in rows if r is not best))
    return selection


def warn_if_emulated_bf16(model: torch.nn.Module, art: Artifact) -> Optional[str]:
    """For an explicit bf16 request on a CPU without native bf16: the warning with its measured
    cost (None where bf16 is native)."""
    if cpu_has_bf16():
        return None
    one = reference_inputs(art, 1)
    fp32 = median_ms(TorchBackend(model, "fp32"), one, budget_s=0.5, max_runs=5)
    bf16 = median_ms(TorchBackend(model, "bf16"), one, budget_s=0.5, max_runs=5)
    message = (f"bf16 requested on a CPU without native bf16 (no AMX or AVX512-BF16): it is emulated, "
               f"{bf16:.1f} ms per image vs {fp32:.1f} ms in fp32 ({bf16 / fp32:.1f}x); use --backend auto or fp32")
    log.warning(message)
    return message
