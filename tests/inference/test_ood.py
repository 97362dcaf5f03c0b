"""Out-of-distribution flag: foreign images of many kinds are flagged, real-looking X-rays are not,
and every adapter carries the flag through the shared schema."""
from __future__ import annotations

import io
import json
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from harness import run_cli
from pneumo_core import ArtifactError
from pneumo_core.inference import InputImage, OutOfDistributionError, PredictRequest, Predictor
from pneumo_core.ood import OodProfile, fit_profile
from pneumo_core.ood.profile import describe
from plugins.datasets.synthetic.phantom import render_phantom

SIZE = 128


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _phantoms(seeds: range, size: int = SIZE) -> np.ndarray:
    return np.stack([render_phantom(s % 2, size, s) for s in seeds])


# -- foreign images, one generator per kind -------------------------------------------------
def landscape(rng: np.random.Generator, size: int) -> np.ndarray:
    """A colour 'photo': sky gradient, hills, a sun, leafy texture."""
    y = np.linspace(0, 1, size)[:, None]
    img = np.zeros((size, size, 3), np.float32)
    img[..., 0], img[..., 1], img[..., 2] = 120 + 80 * y, 170 + 40 * y, 255 - 60 * y
    hills = (size * (0.55 + 0.1 * np.sin(np.linspace(0, rng.uniform(3, 9), size) + rng.uniform(0, 6)))).astype(int)
    for x, h in enumerate(hills):
        img[h:, x] = (40 + rng.uniform(0, 40), 120 + rng.uniform(0, 60), 30)
    cv2.circle(img, (int(size * rng.uniform(.2, .8)), int(size * .2)), size // 10, (255, 230, 90), -1)
    img += rng.normal(0, 12, img.shape) * (np.arange(size)[:, None, None] > hills.min())
    return np.clip(img, 0, 255).astype(np.uint8)


def document(rng: np.random.Generator, size: int) -> np.ndarray:
    img = np.full((size, size), 245, np.uint8)
    for row in range(12, size - 8, 11):
        cv2.putText(img, "".join(rng.choice(list("abcdefgh ijklmnop"), 14)), (6, row),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.3, 20, 1)
    return img


def ct_slice(rng: np.random.Generator, size: int) -> np.ndarray:
    """An axial CT-like slice: black air, a round body, bright ring of ribs, dark lungs, spine."""
    img = np.zeros((size, size), np.uint8)
    c = size // 2
    cv2.ellipse(img, (c, c), (int(size * .45), int(size * .33)), 0, 0, 360, 110, -1)
    cv2.ellipse(img, (c, c), (int(size * .43), int(size * .31)), 0, 0, 360, 230, 3)
    for dx in (-1, 1):
        cv2.ellipse(img, (c + dx * size // 5, c), (size // 7, size // 5), 0, 0, 360, 15, -1)
    cv2.circle(img, (c, c + size // 4), size // 16, 250, -1)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def hand_radiograph(rng: np.random.Generator, size: int) -> np.ndarray:
    """Another body part: a dark field with a palm and five bright finger bones."""
    img = np.full((size, size), 25, np.uint8)
    cv2.ellipse(img, (size // 2, int(size * .75)), (size // 4, size // 5), 0, 0, 360, 120, -1)
    for i in range(5):
        x = int(size * (.3 + .1 * i))
        cv2.line(img, (x, int(size * .62)), (x + int(rng.integers(-5, 6)), int(size * .15)), 200, max(2, size // 25))
    return np.clip(cv2.GaussianBlur(img, (5, 5), 0) + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def foreign_images(size: int = SIZE) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    photo = landscape(rng, size)
    yy, xx = np.mgrid[:size, :size]
    return {
        "colour photo": photo,
        "grey photo": cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY),
        "document": document(rng, size),
        "uniform noise": rng.integers(0, 256, (size, size), dtype=np.uint8),
        "grey noise": np.clip(rng.normal(128, 30, (size, size)), 0, 255).astype(np.uint8),
        "checkerboard": (((yy // 16 + xx // 16) % 2) * 255).astype(np.uint8),
        "stripes": (127 + 127 * np.sin(xx / 3.0)).astype(np.uint8),
        "all black": np.zeros((size, size), np.uint8),
        "all white": np.full((size, size), 255, np.uint8),
        "CT slice": ct_slice(rng, size),
        "hand radiograph": hand_radiograph(rng, size),
    }


@pytest.fixture(scope="module")
def profile() -> OodProfile:
    return fit_profile(_phantoms(range(0, 400)), _phantoms(range(400, 600)))


def test_foreign_images_of_every_kind_are_flagged(profile):
    gray = {k: (cv2.cvtColor(v, cv2.COLOR_RGB2GRAY) if v.ndim == 3 else v) for k, v in foreign_images().items()}
    scores = {k: profile.score(v) for k, v in gray.items()}
    missed = {k: s for k, s in scores.items() if not profile.flagged(s)}
    assert not missed, f"not flagged: {missed}"


def test_at_most_about_three_percent_of_new_xrays_are_flagged(profile):
    scores = [profile.score(im) for im in _phantoms(range(1000, 1300))]
    rate = np.mean([profile.flagged(s) for s in scores])
    assert rate <= 0.03, f"{rate:.1%} of in-distribution images flagged"
    assert 20 < np.median(scores) < 80, "scores of new in-distribution images centre on the validation ones"


def test_the_distance_is_the_probabilistic_pca_likelihood(profile):
    """The numpy scoring equals scikit-learn's PPCA log-likelihood (up to its constant)."""
    from sklearn.decomposition import PCA

    train = _phantoms(range(0, 400))
    z = (np.stack([describe(im) for im in train]) - profile.center) / profile.scale
    pca = PCA(n_components=profile.components.shape[0], svd_solver="full").fit(z)
    probe = np.stack([describe(im) for im in _phantoms(range(2000, 2020))])
    ll = pca.score_samples((probe - profile.center) / profile.scale)
    dist = profile.distance(probe)
    np.testing.assert_allclose(-2 * ll - dist, (-2 * ll - dist)[0], rtol=1e-3, atol=1e-2)


def test_profile_round_trips_and_a_damaged_one_is_refused(profile, tmp_path):
    path = tmp_path / "ood.safetensors"
    profile.save(path)
    again = OodProfile.load(path)
    im = _phantoms(range(7, 8))[0]
    assert again.score(im) == pytest.approx(profile.score(im))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(Exception):
        OodProfile.load(path)


# -- through the artifact and the adapters ------------------------------------------------------
def test_training_writes_a_checksummed_profile(smoke_artifact):
    meta = json.loads((smoke_artifact / "model.json").read_text())
    assert meta["ood"]["file"] == "ood.safetensors"
    assert "ood.safetensors" in (smoke_artifact / "SHA256SUMS").read_text()


def test_every_result_carries_the_flag_and_reject_refuses(smoke_artifact):
    photo = InputImage(name="photo.png", data=_png(foreign_images()["colour photo"]))
    xray = InputImage(name="xray.png", data=_png(render_phantom(1, 96, 3)))
    flag = Predictor(smoke_artifact, backend="torch", batching=False)
    r_photo, r_xray = flag.predict(PredictRequest(images=[photo, xray])).results
    assert r_photo.out_of_distribution is True and r_photo.ood_score > 99.5
    assert r_photo.warnings[0].startswith("out of distribution") and 0 <= r_photo.probability <= 1
    assert r_xray.out_of_distribution is False and not any("out of distribution" in w for w in r_xray.warnings)
    reject = Predictor(smoke_artifact, backend="torch", batching=False, ood_policy="reject")
    with pytest.raises(OutOfDistributionError, match="photo.png: not like the chest X-rays"):
        reject.predict(PredictRequest(images=[xray, photo]))
    assert reject.predict(PredictRequest(images=[xray])).results[0].out_of_distribution is False


def test_rest_flags_and_rejects_with_422(smoke_artifact, monkeypatch):
    from adapters.flask_app.app import create_app
    from adapters.flask_app.settings import Settings

    photo = _png(foreign_images()["document"])
    for policy, status in (("flag", 200), ("reject", 422)):
        monkeypatch.setenv("PNEUMO_ARTIFACT", str(smoke_artifact))
        monkeypatch.setenv("PNEUMO_OOD_POLICY", policy)
        client = create_app(Settings.from_env()).test_client()
        r = client.post("/api/v1/predict", data={"file": (io.BytesIO(photo), "doc.png")},
                        content_type="multipart/form-data")
        assert r.status_code == status, r.json
        if status == 200:
            assert r.json["results"][0]["out_of_distribution"] is True
        else:
            assert r.json["error"] == "out_of_distribution" and "doc.png" in r.json["message"]


def test_runpod_carries_the_flag(smoke_artifact, monkeypatch):
    import asyncio
    import base64

    from adapters.runpod import handler

    monkeypatch.setenv("PNEUMO_ARTIFACT", str(smoke_artifact))
    monkeypatch.setattr(handler, "_predictor", None)
    monkeypatch.setattr(handler, "_settings", None)
    job = {"id": "t", "input": {"image": base64.b64encode(_png(foreign_images()["stripes"])).decode()}}
    out = asyncio.run(handler.handler(job))
    assert out["results"][0]["out_of_distribution"] is True, out


def test_cli_flags_and_rejects(smoke_artifact, tmp_path):
    img = tmp_path / "noise.png"
    img.write_bytes(_png(foreign_images()["uniform noise"]))
    out = run_cli("predict", str(smoke_artifact), str(img), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["results"][0]["out_of_distribution"] is True
    refused = run_cli("predict", str(smoke_artifact), str(img), "--ood-policy", "reject")
    assert refused.returncode == 2 and "not like the chest X-rays" in refused.stderr


def test_ood_fit_adds_a_profile_to_an_artifact_without_one(smoke_artifact, tmp_path):
    from pneumo_core.artifact.store import write_checksums

    art = tmp_path / "art"
    shutil.copytree(smoke_artifact, art)
    (art / "ood.safetensors").unlink()
    with pytest.raises(ArtifactError, match="ood.safetensors is listed"):
        Predictor(art, backend="torch", batching=False)
    meta = json.loads((art / "model.json").read_text())
    del meta["ood"]
    (art / "model.json").write_text(json.dumps(meta))
    write_checksums(art)  # an artifact from before profiles existed
    xray = InputImage(name="x.png", data=_png(render_phantom(0, 96, 1)))
    assert Predictor(art, backend="torch", batching=False).predict(
        PredictRequest(images=[xray])).results[0].out_of_distribution is None
    wrong = run_cli("ood", "fit", str(art), "--data", "configs/smoke.yaml")
    assert wrong.returncode == 2 and "other splits" in wrong.stderr
    out = run_cli("ood", "fit", str(art), "--data", "configs/smoke.yaml", "--set", "data.params.n_train=64",
                  "--set", "data.params.n_val=32", "--set", "data.params.n_test=32")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["fitted_on"]["train"] >= 20
    assert Predictor(art, backend="torch", batching=False).predict(
        PredictRequest(images=[xray])).results[0].out_of_distribution is not None
