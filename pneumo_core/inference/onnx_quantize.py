"""``pneumo export ARTIFACT --format onnx-int8 --calibration DIR``: a statically quantised model.

ONNX Runtime's ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations) calibrated
on images the user supplies, preferably a few hundred training images. On CPUs without VNNI the
weights use 7 bits (``reduce_range``): their u8 x s8 multiply-add instructions saturate with full
8-bit weights. The export measures the largest change in calibrated probability against the
fp32 model on the calibration images and refuses to write ``model.int8.onnx`` when it exceeds
``max_drift`` (default 0.02); ``--backend auto`` measures it again before serving it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from pneumo_core.artifact.store import ONNX_FILES, load_artifact, write_checksums
from pneumo_core.data.preprocess import preprocess
from pneumo_core.device import cpu_has_vnni
from pneumo_core.errors import PneumoError
from pneumo_core.inference.calibration import apply_temperature
from pneumo_core.imaging import ImageError, load_image
from pneumo_core.inference.backends import OnnxBackend

INT8_FILE = ONNX_FILES["onnx-int8"]
_SUFFIXES = {".jpg", ".jpeg", ".png", ".dcm", ".dicom"}


def calibration_batches(folder: Path, prep, limit: int = 256) -> list[np.ndarray]:
    """Preprocessed (1, C, S, S) inputs from up to ``limit`` readable images under ``folder``."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _SUFFIXES)
    files = files[::max(1, len(files) // limit)][:limit]  # spread over the folder (all classes)
    out = []
    for path in files:
        try:
            out.append(preprocess(load_image(path).pixels, prep)[None])
        except ImageError:
            continue
    if len(out) < 8:
        raise PneumoError(f"{folder}: found {len(out)} readable images; int8 calibration needs at least 8 "
                          "(a few hundred training images is better)")
    return out


class Int8TooInaccurate(PneumoError):
    code = "int8_too_inaccurate"


def quantize_int8(artifact_dir: str | Path, inputs: Iterable[np.ndarray],
                  max_drift: float = 0.02) -> tuple[Path, float]:
    """Write ``model.int8.onnx`` from the artifact's ``model.onnx``; return its path and the largest
    change in calibrated probability against fp32 on ``inputs``. Raises Int8TooInaccurate, writing
    nothing, when that change exceeds ``max_drift``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    art = load_artifact(artifact_dir)
    fp32_path = art.folder / ONNX_FILES["onnx"]
    if not fp32_path.is_file():
        raise PneumoError(f"{fp32_path} not found: run `pneumo export {art.folder} --format onnx` first")
    inputs = list(inputs)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({"image": x} for x in inputs)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre))
        staged = Path(tmp) / INT8_FILE
        reduce_range = not cpu_has_vnni()
        quantize_static(str(pre), str(staged), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        fp32, int8 = OnnxBackend(fp32_path), OnnxBackend(staged)
        batch = np.concatenate(inputs)
        drift = float(np.abs(apply_temperature(fp32(batch), art.temperature)
                             - apply_temperature(int8(batch), art.temperature)).max())
        if not drift <= max_drift:
            raise Int8TooInaccurate(
                f"int8 changes calibrated probabilities by up to {drift:.4f} against fp32 on {len(inputs)} "
                f"calibration images, more than the tolerance {max_drift:g}: not written"
                f"{' (7-bit weights: this CPU has no VNNI)' if reduce_range else ''}. Serve fp32 ONNX "
                "(--backend auto picks it), or raise --max-drift if your validation says the change is acceptable.")
        out = art.folder / INT8_FILE
        staged.replace(out)
    write_checksums(art.folder)
    return out, drift
