"""Ensembles and test-time augmentation as artifacts: built by `pneumo ensemble`, served everywhere."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness import REPO, run_cli
from pneumo_core.artifact import load_artifact
from pneumo_core.inference import InputImage, Predictor, PredictRequest

SMOKE = str(REPO / "configs" / "smoke.yaml")
DATA = ["--bootstrap", "20"]  # the smoke config's own data, as the member was trained


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    """A member with some skill (the session's one-epoch smoke artifact has none, so its
    temperature sits at the bound and says nothing about calibration)."""
    from pneumo_core.config import load_config
    from pneumo_core.training import train

    # fp32: on a CPU with native bf16 the member would fit its temperature on bf16 logits, and the
    # ensemble refits on fp32 ones (about 1% apart)
    rc = load_config(SMOKE, ["train.bootstrap=20", "train.precision=fp32"])
    return train(rc, tmp_path_factory.mktemp("member"), resume=False, progress=False)


def _ensemble(tmp_path, name, *args):
    out = run_cli("ensemble", *args, "--out", str(tmp_path / name), "--data", SMOKE, *DATA, timeout=600)
    assert out.returncode == 0, out.stderr
    return tmp_path / name


def _probs(artifact, images, backend="torch"):
    predictor = Predictor(artifact, backend=backend, precision="fp32", batching=False, warmup=False)
    response = predictor.predict(PredictRequest(images=[InputImage(name=f"{i}.png", data=d) for i, d in enumerate(images)]))
    return np.array([r.probability for r in response.results]), response


@pytest.fixture(scope="module")
def images(phantom_png):
    import io

    from PIL import Image

    from plugins.datasets.synthetic.phantom import render_phantom

    out = [phantom_png]
    for label, seed in ((0, 11), (1, 12), (0, 13)):
        buf = io.BytesIO()
        Image.fromarray(render_phantom(label, 128, seed)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def test_an_ensemble_of_one_equals_its_member(member, tmp_path, images):
    one = _ensemble(tmp_path, "one", str(member))
    meta = json.loads((one / "model.json").read_text())
    source = load_artifact(member).raw
    assert meta["model"]["name"] == "ensemble" and len(meta["ensemble"]["members"]) == 1
    assert 0.05 < source["calibration"]["temperature"] < 20, "a member with a fitted temperature"
    assert meta["calibration"]["temperature"] == pytest.approx(1.0, abs=2e-3), "the member was calibrated already"
    assert meta["threshold"] == pytest.approx(source["threshold"], abs=2e-3)
    mine, response = _probs(one, images)
    theirs, _ = _probs(member, images)
    np.testing.assert_allclose(mine, theirs, atol=2e-3)
    assert response.model.name == "one"
    assert "An ensemble of 1 networks" in (one / "report.md").read_text()


def test_ensemble_with_test_time_views_serves_the_same_in_torch_and_onnx(member, tmp_path, images):
    ens = _ensemble(tmp_path, "ens", str(member), str(member), "--tta", "default")
    meta = json.loads((ens / "model.json").read_text())
    assert len(meta["ensemble"]["members"]) == 2 and len(meta["preprocessing"]["tta"]) == 7
    torch_p, response = _probs(ens, images)
    single, _ = _probs(member, images)
    assert not np.allclose(torch_p, single, atol=1e-4), "the views change the probabilities"
    assert run_cli("export", str(ens), "--format", "onnx", timeout=600).returncode == 0
    onnx_p, _ = _probs(ens, images, backend="onnx")
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-4)
    # Grad-CAM averages the members' maps; the CLI serves the same artifact
    predictor = Predictor(ens, backend="torch", precision="fp32", batching=False, warmup=False)
    heat = predictor.predict(PredictRequest(images=[InputImage(name="x.png", data=images[0])], heatmap=True))
    assert heat.results[0].heatmap_png_base64
    (tmp_path / "x.png").write_bytes(images[0])
    out = run_cli("predict", str(ens), "--json", str(tmp_path / "x.png"), timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["results"][0]["probability"] == pytest.approx(torch_p[0], abs=0.03)  # bf16 there


def test_members_that_read_different_inputs_are_refused(member, tmp_path):
    import shutil

    from pneumo_core.artifact.store import write_checksums

    other = tmp_path / "other"
    shutil.copytree(member, other)
    raw = json.loads((other / "model.json").read_text())
    raw["preprocessing"]["image_size"] = 96
    (other / "model.json").write_text(json.dumps(raw))
    write_checksums(other)
    out = run_cli("ensemble", str(member), str(other), "--out", str(tmp_path / "bad"), "--data", SMOKE)
    assert out.returncode == 2 and "image size" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "bad").exists()
    other_data = run_cli("ensemble", str(member), "--out", str(tmp_path / "b3"), "--data", SMOKE,
                         "--set", "data.params.seed=5")
    assert other_data.returncode == 2 and "trained on other splits" in other_data.stderr
    assert not (tmp_path / "b3").exists()
    bad_tta = run_cli("ensemble", str(member), "--out", str(tmp_path / "b2"), "--data", SMOKE, "--tta", "0.9,0,1")
    assert bad_tta.returncode == 2 and "--tta" in bad_tta.stderr
