"""Artifact integrity: checksums, truncation, tampering, and the predict/evaluate CLIs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import run_cli
from pneumo_core import ArtifactError
from pneumo_core.artifact import build_model, load_artifact


@pytest.fixture()
def artifact_copy(smoke_artifact, tmp_path) -> Path:
    dst = tmp_path / "art"
    shutil.copytree(smoke_artifact, dst)
    return dst


def test_loads_and_rebuilds(smoke_artifact):
    art = load_artifact(smoke_artifact)
    model = build_model(art)
    assert sum(p.numel() for p in model.parameters()) == art.raw["model"]["num_parameters"]


def test_flipped_byte_in_weights_is_refused(artifact_copy):
    path = artifact_copy / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.safetensors: checksum mismatch"):
        load_artifact(artifact_copy)
    out = run_cli("predict", str(artifact_copy), str(path))
    assert out.returncode == 2 and "checksum mismatch" in out.stderr and "Traceback" not in out.stderr


def test_truncated_weights_and_tampered_metadata(artifact_copy):
    meta = artifact_copy / "model.json"
    raw = json.loads(meta.read_text())
    raw["threshold"] = 0.01
    meta.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="model.json: checksum mismatch"):
        load_artifact(artifact_copy)
    weights = artifact_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="model.safetensors: checksum mismatch"):
        load_artifact(artifact_copy)
    # without checksum verification the safetensors reader itself refuses the torn file
    with pytest.raises(ArtifactError, match="unreadable weights"):
        load_artifact(artifact_copy, verify=False)


def test_missing_pieces(artifact_copy, tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nothing")
    (artifact_copy / "SHA256SUMS").unlink()
    with pytest.raises(ArtifactError, match="no SHA256SUMS"):
        load_artifact(artifact_copy)
    (artifact_copy / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="missing model.safetensors"):
        load_artifact(artifact_copy)


def test_predict_cli_text_and_json(smoke_artifact, phantom_png, tmp_path):
    img = tmp_path / "phantom.png"
    img.write_bytes(phantom_png)
    out = run_cli("predict", str(smoke_artifact), str(img))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(img)) and "p=" in out.stdout
    out = run_cli("predict", str(smoke_artifact), str(img), str(img), "--json", "--heatmap-dir", str(tmp_path / "cams"))
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["model"]["name"] == "smoke" and len(body["results"]) == 2
    assert body["results"][0]["label"] in ("NORMAL", "PNEUMONIA")
    assert (tmp_path / "cams" / "phantom_gradcam.png").stat().st_size > 1000
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    out = run_cli("predict", str(smoke_artifact), str(bad))
    assert out.returncode == 2 and "bad.jpg" in out.stderr and "Traceback" not in out.stderr


def test_evaluate_cli_writes_metrics_and_plots(smoke_artifact, repo, tmp_path):
    out = run_cli("evaluate", str(smoke_artifact), "--data", str(repo / "configs" / "smoke.yaml"),
                  "--set", "data.params.n_test=40", "--split", "test", "--bootstrap", "50", "--out", str(tmp_path / "ev"))
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert metrics["n"] == 40 and metrics["auc_ci_low"] <= metrics["auc"] <= metrics["auc_ci_high"]
    for name in ("metrics.json", "report.md", "test_roc.png", "test_confusion.png", "test_reliability.png"):
        assert (tmp_path / "ev" / name).is_file()


def test_fp16_repack_predicts_like_the_original(smoke_artifact, phantom_png, tmp_path):
    import numpy as np

    out = run_cli("export", str(smoke_artifact), "--format", "fp16", "--out", str(tmp_path / "fp16"))
    assert out.returncode == 0, out.stderr
    small = load_artifact(tmp_path / "fp16")
    assert small.raw["weights_dtype"] == "float16"
    assert (tmp_path / "fp16" / "model.safetensors").stat().st_size < 0.6 * (smoke_artifact / "model.safetensors").stat().st_size
    from pneumo_core.inference import InputImage, PredictRequest, Predictor

    req = PredictRequest(images=[InputImage(name="x.png", data=phantom_png)])
    a = Predictor(smoke_artifact, backend="torch", precision="fp32").predict(req).results[0].probability
    b = Predictor(tmp_path / "fp16", backend="torch", precision="fp32").predict(req).results[0].probability
    assert np.isclose(a, b, atol=0.01)
    assert run_cli("export", str(smoke_artifact), "--format", "fp16").returncode == 2
