"""``--backend auto``: measured choice among accurate backends, the on-demand ONNX cache, and
bf16 only where the CPU has it."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from harness import run_cli
from pneumo_core.artifact import load_artifact
from pneumo_core.artifact.store import build_model
from pneumo_core.inference import InputImage, PredictRequest, Predictor
from pneumo_core.inference import backend_choice
from pneumo_core.inference.onnx_export import onnx_model_for
from plugins.datasets.synthetic.phantom import render_phantom


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _probs(predictor: Predictor, n: int = 6) -> np.ndarray:
    images = [InputImage(name=f"p{i}.png", data=_png(render_phantom(i % 2, 96, 40 + i))) for i in range(n)]
    return np.array([r.probability for r in predictor.predict(PredictRequest(images=images)).results])


def test_auto_is_the_default_and_picks_the_fastest_accurate_backend(smoke_artifact):
    predictor = Predictor(smoke_artifact, batching=False)
    sel = predictor.backend_selection
    assert predictor.info.backend == sel.chosen
    rows = {r.name: r for r in sel.candidates}
    assert rows["torch-fp32"].status in ("accurate", "chosen")
    accurate = [r for r in sel.candidates if r.status in ("accurate", "chosen")]
    assert all(r.max_prob_change <= sel.tolerance for r in accurate)
    assert rows[sel.chosen].p50_ms == min(r.p50_ms for r in accurate)
    assert {"onnx", "openvino", "onnx-int8", "torch-bf16"} <= set(rows)
    assert "no model.int8.onnx" in rows["onnx-int8"].note
    # whatever it chose answers like torch fp32
    reference = Predictor(smoke_artifact, backend="torch", precision="fp32", batching=False)
    np.testing.assert_allclose(_probs(predictor), _probs(reference), atol=sel.tolerance)


def test_a_backend_outside_the_tolerance_is_never_chosen(smoke_artifact):
    art = load_artifact(smoke_artifact)
    _, sel = backend_choice.choose_backend(art, build_model(art), tolerance=1e-12)
    assert sel.chosen == "torch-fp32"
    inaccurate = [r for r in sel.candidates if r.status == "inaccurate"]
    assert inaccurate, "bf16 and ONNX differ from fp32 by more than 1e-12"
    assert all("probabilities move by" in r.note for r in inaccurate)


def test_bf16_is_no_candidate_without_native_bf16_and_an_explicit_request_warns(smoke_artifact, monkeypatch, caplog):
    monkeypatch.setattr(backend_choice, "cpu_has_bf16", lambda: False)
    art = load_artifact(smoke_artifact)
    _, sel = backend_choice.choose_backend(art, build_model(art))
    bf16 = next(r for r in sel.candidates if r.name == "torch-bf16")
    assert bf16.status == "unavailable" and "no native bf16" in bf16.note
    message = backend_choice.warn_if_emulated_bf16(build_model(art), art)
    assert "emulated" in message and "ms per image" in message
    assert message in caplog.text


def test_onnx_serves_without_an_export_step_from_a_verified_cache(smoke_artifact, tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMO_CACHE_DIR", str(tmp_path / "cache"))
    assert not (smoke_artifact / "model.onnx").exists()
    onnx = Predictor(smoke_artifact, backend="onnx", batching=False)
    assert onnx.info.backend == "onnx"
    art = load_artifact(smoke_artifact)
    cached = onnx_model_for(art, build_model(art))
    assert cached.is_relative_to(tmp_path / "cache") and not (smoke_artifact / "model.onnx").exists()
    torch_p = Predictor(smoke_artifact, backend="torch", precision="fp32", batching=False)
    np.testing.assert_allclose(_probs(onnx), _probs(torch_p), atol=1e-4)
    # a damaged cache entry fails its hash and is exported again, not served
    good = cached.read_bytes()
    cached.write_bytes(good[: len(good) // 2])
    assert onnx_model_for(art, build_model(art)).read_bytes() == good
    assert (cached.parent.stat().st_mode & 0o077) == 0, "the cache folder is the user's own"


def test_a_swapped_cached_export_is_refused(smoke_artifact, tmp_path, monkeypatch):
    """The cache's own hash only catches damage: one who can write the cache could swap in another
    model with a matching hash file. Loading compares the export's answers with the weights'."""
    import torch

    from pneumo_core import ArtifactError
    from pneumo_core.hashing import sha256_file
    from pneumo_core.inference.onnx_export import write_onnx

    monkeypatch.setenv("PNEUMO_CACHE_DIR", str(tmp_path / "cache"))
    art = load_artifact(smoke_artifact)
    model = build_model(art)
    cached = onnx_model_for(art, model)
    other = build_model(art)
    head = [m for m in other.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.bias[1] += 5.0  # another model: every probability moves
    write_onnx(other, art.meta.preprocessing, cached)
    (cached.parent / "model.onnx.sha256").write_text(sha256_file(cached) + "\n")
    with pytest.raises(ArtifactError, match="answers unlike the model"):
        Predictor(smoke_artifact, backend="onnx", batching=False)


def test_precision_fp32_keeps_auto_to_fp32_backends(smoke_artifact):
    art = load_artifact(smoke_artifact)
    _, sel = backend_choice.choose_backend(art, build_model(art), precision="fp32")
    assert "bf16" not in sel.chosen
    assert all(r.status == "unavailable" for r in sel.candidates if "bf16" in r.name)


def test_the_cli_says_what_auto_chose(smoke_artifact, tmp_path):
    img = tmp_path / "x.png"
    img.write_bytes(_png(render_phantom(1, 96, 7)))
    out = run_cli("predict", str(smoke_artifact), str(img), "--json")
    assert out.returncode == 0, out.stderr
    backend = json.loads(out.stdout)["model"]["backend"]
    assert f"on {backend} (" in out.stderr


def test_an_int8_model_is_refused_by_auto_when_it_drifts(smoke_artifact, tmp_path):
    import shutil

    dst = tmp_path / "art"
    shutil.copytree(smoke_artifact, dst)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(12):
        (calib / f"c{i}.png").write_bytes(_png(render_phantom(i % 2, 96, 500 + i)))
    out = run_cli("export", str(dst), "--format", "onnx-int8", "--calibration", str(calib), "--max-drift", "1",
                  timeout=600)
    assert out.returncode == 0, out.stderr
    art = load_artifact(dst)
    _, sel = backend_choice.choose_backend(art, build_model(art), tolerance=1e-6)
    int8 = next(r for r in sel.candidates if r.name == "onnx-int8")
    assert int8.status == "inaccurate" and int8.max_prob_change > 1e-6
    loose = backend_choice.choose_backend(art, build_model(art), tolerance=1.0)[1]
    assert next(r for r in loose.candidates if r.name == "onnx-int8").status in ("accurate", "chosen")
