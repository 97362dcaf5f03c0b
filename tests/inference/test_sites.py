"""Per-site operating points: fitted by `pneumo calibrate`, stored hashed and versioned in the
artifact, used and echoed by the CLI, REST and RunPod; unknown sites are a clear 4xx."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from harness import run_cli
from pneumo_core import ArtifactError
from pneumo_core.artifact import load_artifact
from pneumo_core.artifact.store import write_checksums
from plugins.datasets.synthetic.phantom import render_phantom


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _site_images(folder, n: int = 25, gain: float = 1.25):
    """A site whose scanner exposes brighter than the training data."""
    for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
        (folder / cls).mkdir(parents=True)
        for i in range(n):
            img = np.clip(render_phantom(label, 96, 900 + 2 * i + label).astype(float) * gain, 0, 255)
            (folder / cls / f"{i}.png").write_bytes(_png(img.astype(np.uint8)))
    return folder


@pytest.fixture(scope="module")
def calibrated(smoke_artifact, tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    art = root / "art"
    shutil.copytree(smoke_artifact, art)
    data = _site_images(root / "clinic")
    out = run_cli("calibrate", str(art), str(data), "--site", "clinic-a", "--bootstrap", "200")
    assert out.returncode == 0, out.stderr
    return art, data, json.loads(out.stdout[:out.stdout.rindex("}") + 1])


def test_calibrate_stores_a_hashed_versioned_profile_with_a_ci(calibrated):
    art, data, profile = calibrated
    assert profile["version"] == 1 and profile["images"] == {"NORMAL": 25, "PNEUMONIA": 25}
    assert 0 < profile["threshold"] < 1 and profile["temperature"] > 0
    for what in ("sensitivity", "specificity"):
        lo, hi = profile["ci95"][what]
        assert 0 <= lo <= hi <= 1
    loaded = load_artifact(art)  # checksums still hold
    assert loaded.sites["clinic-a"].sha256 == profile["sha256"]
    card = (art / "report.md").read_text()
    assert card.count("## Site clinic-a") == 1 and "95% CI" in card


def test_refitting_bumps_the_version_and_replaces_the_card_section(calibrated, tmp_path):
    art, data, _ = calibrated
    copy = tmp_path / "art"
    shutil.copytree(art, copy)
    out = run_cli("calibrate", str(copy), str(data), "--site", "clinic-a", "--target-sensitivity", "0.9",
                  "--bootstrap", "50")
    assert out.returncode == 0, out.stderr
    site = load_artifact(copy).sites["clinic-a"]
    assert site.version == 2 and site.method == "sensitivity>=0.9"
    assert (copy / "report.md").read_text().count("## Site clinic-a") == 1


def test_a_hand_edited_profile_is_refused(calibrated, tmp_path):
    art, _, _ = calibrated
    copy = tmp_path / "art"
    shutil.copytree(art, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["sites"]["clinic-a"]["threshold"] = 0.01
    (copy / "model.json").write_text(json.dumps(meta))
    write_checksums(copy)  # even with the checksums redone, the profile's own digest catches it
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        load_artifact(copy)


def test_bad_site_data_is_a_clear_error(smoke_artifact, tmp_path):
    few = _site_images(tmp_path / "few", n=2)
    out = run_cli("calibrate", str(smoke_artifact), str(few), "--site", "x")
    assert out.returncode == 2 and "at least 5 images of each class" in out.stderr
    for name in ("bad name!", "default"):  # 'default' is the model's own operating point in /metrics
        out = run_cli("calibrate", str(smoke_artifact), str(few), "--site", name)
        assert out.returncode == 2 and "site name" in out.stderr


def test_a_csv_manifest_works_as_site_data(smoke_artifact, tmp_path):
    data = _site_images(tmp_path / "imgs", n=6)
    rows = ["path,label"] + [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in sorted(data.rglob("*.png"))]
    (tmp_path / "site.csv").write_text("\n".join(rows) + "\n")
    art = tmp_path / "art"
    shutil.copytree(smoke_artifact, art)
    out = run_cli("calibrate", str(art), str(tmp_path / "site.csv"), "--site", "csv-site", "--bootstrap", "20")
    assert out.returncode == 0, out.stderr
    assert load_artifact(art).sites["csv-site"].images == {"NORMAL": 6, "PNEUMONIA": 6}


def test_predict_cli_uses_and_echoes_the_site(calibrated, tmp_path):
    art, data, profile = calibrated
    img = next((data / "NORMAL").iterdir())
    out = run_cli("predict", str(art), str(img), "--json", "--site", "clinic-a")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["site"]["name"] == "clinic-a" and body["site"]["version"] == 1
    assert body["results"][0]["threshold"] == pytest.approx(profile["threshold"])
    bad = run_cli("predict", str(art), str(img), "--site", "nowhere")
    assert bad.returncode == 2 and "unknown site 'nowhere'" in bad.stderr and "clinic-a" in bad.stderr


def test_rest_takes_the_site_as_field_or_header(calibrated, monkeypatch):
    from adapters.flask_app.app import create_app
    from adapters.flask_app.settings import Settings

    art, data, profile = calibrated
    monkeypatch.setenv("PNEUMO_ARTIFACT", str(art))
    client = create_app(Settings.from_env()).test_client()
    png = next((data / "PNEUMONIA").iterdir()).read_bytes()

    def post(form=None, headers=None):
        return client.post("/api/v1/predict", data={"file": (io.BytesIO(png), "x.png"), **(form or {})},
                           headers=headers or {}, content_type="multipart/form-data")

    for r in (post({"site": "clinic-a"}), post(headers={"X-Pneumo-Site": "clinic-a"})):
        assert r.status_code == 200, r.json
        assert r.json["site"]["sha256"] == profile["sha256"]
        assert r.json["results"][0]["threshold"] == pytest.approx(profile["threshold"])
    assert post().json["site"] is None
    unknown = post({"site": "elsewhere"})
    assert unknown.status_code == 400 and unknown.json["error"] == "unknown_site"
    sites = client.get("/api/v1/models").json["models"][0]["sites"]
    assert sites["clinic-a"]["version"] == 1


def test_runpod_takes_the_site(calibrated, monkeypatch):
    from adapters.runpod import handler

    art, data, profile = calibrated
    monkeypatch.setenv("PNEUMO_ARTIFACT", str(art))
    monkeypatch.setattr(handler, "_predictor", None)
    monkeypatch.setattr(handler, "_settings", None)
    image = base64.b64encode(next((data / "NORMAL").iterdir()).read_bytes()).decode()
    out = asyncio.run(handler.handler({"id": "s", "input": {"image": image, "site": "clinic-a"}}))
    assert out["site"]["name"] == "clinic-a", out
    out = asyncio.run(handler.handler({"id": "s", "input": {"image": image, "site": "elsewhere"}}))
    assert out["error"].startswith("unknown_site:")
