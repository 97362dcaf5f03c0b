"""Inference backends. Each maps a float32 batch (N, C, S, S) to (N, classes) float32 logits.

=============  ===============================================================================
``auto``       the fastest of the others whose probabilities match torch fp32 (``backend_choice``)
``torch``      PyTorch eager, fp32 or bf16 (``precision``); on CUDA when a GPU is visible
``onnx``       ONNX Runtime on the ONNX export (the artifact's ``model.onnx`` or a cached export)
``openvino``   OpenVINO on the same ONNX export (``pip install openvino``)
``onnx-int8``  ONNX Runtime on the artifact's ``model.int8.onnx`` (``pneumo export --format onnx-int8``)
=============  ===============================================================================
"""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import torch

from pneumo_core.artifact.store import ONNX_FILES
from pneumo_core.config.schema import BACKENDS
from pneumo_core.device import cpu_has_bf16
from pneumo_core.errors import ArtifactError, PneumoError

__all__ = ["BACKENDS", "OnnxBackend", "OpenVinoBackend", "TorchBackend", "installed", "require_onnx_file"]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class TorchBackend:
    """bf16 keeps a bf16 copy of the weights (no per-call casting: about 1.5x faster than
    autocast for one image on AMX CPUs); the caller's model stays fp32 on the CPU."""

    def __init__(self, model: torch.nn.Module, precision: str = "auto", device: str = "cpu") -> None:
        cuda = device == "cuda"
        if precision == "auto":
            precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else \
                ("bf16" if cpu_has_bf16() else "fp32")
        self.precision = precision
        self.name = f"torch-{'cuda-' if cuda else ''}{precision}"
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.device = torch.device("cuda" if cuda else "cpu")
        model = model.eval()
        if self.dtype != torch.float32 or cuda:
            model = copy.deepcopy(model).to(self.device, self.dtype)
        self.model = model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model(x).float().cpu().numpy()


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


class OpenVinoBackend:
    """OpenVINO's CPU plugin on an ONNX file, in fp32 unless ``precision="bf16"`` (which OpenVINO
    would pick by itself on AMX CPUs: here precision is chosen by measurement, not by default)."""

    def __init__(self, path: Path, threads: int = 0, precision: str = "fp32") -> None:
        self.name = "openvino" if precision == "fp32" else f"openvino-{precision}"
        try:
            import openvino as ov
        except ImportError as exc:
            raise PneumoError("the openvino backend needs OpenVINO: pip install 'pneumo[openvino]'") from exc
        require_onnx_file(path)
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision], "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(out[self.output], dtype=np.float32)
