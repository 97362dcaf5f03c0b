"""Tampered artifacts: files outside the checksums, out-of-range metadata, non-finite weights and outputs.

Each case re-signs the artifact (rewrites SHA256SUMS) the way an attacker or a careless edit
would, so that only the new checks stand between it and serving.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness import run_cli
from pneumo_core import ArtifactError
from pneumo_core.artifact import load_artifact
from pneumo_core.artifact.store import write_checksums
from pneumo_core.errors import ModelOutputError
from pneumo_core.inference import InputImage, Predictor, PredictRequest


@pytest.fixture()
def artifact(smoke_artifact, tmp_path) -> Path:
    dst = tmp_path / "art"
    shutil.copytree(smoke_artifact, dst, ignore=shutil.ignore_patterns("model*.onnx"))
    write_checksums(dst)
    return dst


@pytest.mark.parametrize("name", ["model.onnx", "model.int8.onnx"])
def test_a_model_file_dropped_in_after_signing_is_refused(artifact, name):
    (artifact / name).write_bytes(b"\x08\x07not really onnx")
    with pytest.raises(ArtifactError, match=f"{name} not covered by SHA256SUMS"):
        load_artifact(artifact)
    backend = "onnx" if name == "model.onnx" else "onnx-int8"
    out = run_cli("serve", "--artifact", str(artifact), "--backend", backend, timeout=120)
    assert out.returncode == 2 and "not covered by SHA256SUMS" in out.stderr and "Traceback" not in out.stderr


def _edit_meta(folder: Path, **changes) -> None:
    raw = json.loads((folder / "model.json").read_text())
    for key, value in changes.items():
        target = raw
        *path, last = key.split("__")
        for part in path:
            target = target[part]
        target[last] = value
    (folder / "model.json").write_text(json.dumps(raw))  # json writes NaN as NaN
    write_checksums(folder)


@pytest.mark.parametrize("changes, message", [
    ({"threshold": -1}, "threshold"),
    ({"threshold": 2}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
    ({"calibration__temperature": 0}, "temperature must be a positive finite number"),
    ({"calibration__temperature": -1.5}, "temperature must be a positive finite number"),
    ({"calibration__temperature": float("inf")}, "temperature must be a positive finite number"),
    ({"classes": ["PNEUMONIA", "NORMAL"]}, "swapped"),
    ({"classes": ["NORMAL", "NORMAL"]}, "two distinct names"),
    ({"classes": ["NORMAL", "PNEUMONIA", "COVID"]}, "classes"),
])
def test_out_of_range_metadata_is_refused_at_load(artifact, changes, message):
    _edit_meta(artifact, **changes)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(artifact)
    out = run_cli("predict", str(artifact), str(artifact / "model.json"))
    assert out.returncode == 2 and "invalid metadata" in out.stderr and "Traceback" not in out.stderr


def _edit_weights(folder: Path, key: str, value: float) -> None:
    state = load_file(str(folder / "model.safetensors"))
    state[key] = torch.full_like(state[key], value)
    save_file(state, str(folder / "model.safetensors"))
    write_checksums(folder)


def test_nan_weights_are_refused_at_load(artifact):
    _edit_weights(artifact, "fc.weight", float("nan"))
    with pytest.raises(ArtifactError, match="non-finite weights .* fc.weight"):
        load_artifact(artifact)


def test_a_non_finite_output_is_an_error_never_a_label(artifact, phantom_png):
    # finite weights that overflow: both logits become +inf, so their difference is NaN
    _edit_weights(artifact, "fc.weight", 1e38)
    predictor = Predictor(artifact, batching=False, warmup=False)
    request = PredictRequest(images=[InputImage(name="x.png", data=phantom_png)])
    with pytest.raises(ModelOutputError, match="non-finite output"):
        predictor.predict(request)

    from adapters.flask_app.app import create_app
    from adapters.flask_app.settings import Settings

    client = create_app(Settings(artifact=str(artifact)), predictor=predictor).test_client()
    resp = client.post("/api/v1/predict", data={"file": (io.BytesIO(phantom_png), "x.png")},
                       content_type="multipart/form-data")
    assert resp.status_code == 500
    assert resp.get_json()["error"] == "model_output_invalid" and "no label" in resp.get_json()["message"]


@pytest.mark.parametrize("plugin", ["antigravity", "evil_plugin.py", "some.package.module"])
def test_artifact_plugins_that_no_package_registers_need_trust(artifact, monkeypatch, plugin):
    from pneumo_core.artifact import build_model

    _edit_meta(artifact, plugins=[plugin])
    monkeypatch.delenv("PNEUMO_TRUST_ARTIFACT_PLUGINS", raising=False)
    with pytest.raises(ArtifactError, match="no installed package registers as a pneumo plugin"):
        build_model(load_artifact(artifact))
    out = run_cli("predict", str(artifact), str(artifact / "model.json"))
    assert out.returncode == 2 and "PNEUMO_TRUST_ARTIFACT_PLUGINS=1" in out.stderr and "Traceback" not in out.stderr


def test_registered_plugin_modules_load_without_trust(artifact, monkeypatch):
    from pneumo_core.artifact import build_model

    monkeypatch.delenv("PNEUMO_TRUST_ARTIFACT_PLUGINS", raising=False)
    _edit_meta(artifact, plugins=["plugins.models.resnet18"])
    assert build_model(load_artifact(artifact)) is not None
