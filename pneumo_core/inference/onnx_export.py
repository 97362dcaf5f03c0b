"""``pneumo export ARTIFACT --format onnx``: write ``model.onnx`` beside the weights."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from pneumo_core.artifact.store import ONNX_FILES, build_model, load_artifact, write_checksums


def export_onnx(artifact_dir: str | Path, opset: int = 18) -> Path:
    """Export the artifact's model with a dynamic batch axis and add it to SHA256SUMS."""
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):  # their INFO lines drown the CLI output
        logging.getLogger(noisy).setLevel(logging.WARNING)
    art = load_artifact(artifact_dir)
    model = build_model(art)
    prep = art.meta.preprocessing
    dummy = torch.zeros(2, prep.in_chans, prep.image_size, prep.image_size)
    out = art.folder / ONNX_FILES["onnx"]
    tmp = art.folder / ".model.onnx.tmp"
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(model, (dummy,), dynamo=True, input_names=["image"], output_names=["logits"],
                                dynamic_shapes={"x": {0: batch}}, opset_version=opset, verbose=False)
    program.save(str(tmp))
    tmp.replace(out)
    write_checksums(art.folder)
    return out
