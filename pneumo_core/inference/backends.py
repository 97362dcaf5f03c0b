"""Inference backends: PyTorch (fp32 or bf16 autocast) and ONNX Runtime. Each maps a float32
batch (N, C, S, S) to (N, classes) float32 logits."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from pneumo_core.artifact.store import ONNX_FILES
from pneumo_core.device import cpu_has_bf16
from pneumo_core.errors import ArtifactError, PneumoError


class TorchBackend:
    """bf16 keeps a bf16 copy of the weights (no per-call casting: about 1.5x faster than
    autocast for one image on AMX CPUs); the caller's model stays fp32."""

    def __init__(self, model: torch.nn.Module, precision: str = "auto") -> None:
        if precision == "auto":
            precision = "bf16" if cpu_has_bf16() else "fp32"
        self.precision = precision
        self.name = f"torch-{precision}"
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        model = model.eval()
        if self.dtype != torch.float32:
            model = copy.deepcopy(model).to(self.dtype)
        self.model = model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model(x).float().numpy()


def require_onnx_file(path: Path) -> None:
    """Raise ArtifactError, saying how to export it, when an ONNX model file is missing."""
    if not path.is_file():
        fmt = "onnx-int8 --calibration DIR" if path.name == ONNX_FILES["onnx-int8"] else "onnx"
        raise ArtifactError(f"{path} not found: run `pneumo export ARTIFACT --format {fmt}` first")


class OnnxBackend:
    """``threads=0`` uses the process's torch thread count, which the gunicorn config splits
    between workers, so ONNX Runtime and PyTorch serve with the same core budget."""

    def __init__(self, path: Path, threads: int = 0, name: str = "onnx") -> None:
        self.name = name
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise PneumoError("the onnx backend needs onnxruntime: pip install 'pneumo[onnx]'") from exc
        require_onnx_file(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(batch, dtype=np.float32)})[0]
