"""The bundled model: present, intact, loadable from a fresh install, and as good as its card says."""
from __future__ import annotations

import json

import pytest

from harness import REPO, run_cli
from pneumo_core.artifact import load_artifact

BUNDLED = REPO / "models" / "pneumo-resnet18-kermany"


def test_bundled_artifact_is_intact_and_meets_the_validation_target():
    art = load_artifact(BUNDLED)  # verifies SHA256SUMS
    assert art.meta.classes == ["NORMAL", "PNEUMONIA"]
    assert art.raw["weights_dtype"] == "float16"
    val = art.raw["metrics"]["val"]
    assert val["auc"] >= 0.99, "the bundled model's validation ROC AUC target is 0.99"
    assert art.raw["data"]["counts"]["val"] > 400 and "test" not in art.raw["metrics"], \
        "trained on the train split only; the official test split is held out"
    assert (BUNDLED / "report.md").read_text().count("Not for clinical use") == 1
    ood = art.raw["ood"]  # its out-of-distribution profile flags few of its own validation X-rays
    assert ood["fitted_on"]["train"] > 4000 and max(ood["flagged_fraction"].values()) <= 0.03


def test_predict_cli_on_the_bundled_model(phantom_png, tmp_path):
    img = tmp_path / "phantom.png"
    img.write_bytes(phantom_png)
    out = run_cli("predict", str(BUNDLED), str(img), "--json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["model"]["name"] == "pneumo-resnet18-kermany"
    assert body["results"][0]["label"] in ("NORMAL", "PNEUMONIA")
    assert isinstance(body["results"][0]["out_of_distribution"], bool), "the bundled model has an OOD profile"


@pytest.mark.parametrize("config", ["default.yaml", "kermany_resnet18.yaml"])
def test_configs_match_the_bundled_preprocessing(config):
    from pneumo_core.config import load_config

    rc = load_config(REPO / "configs" / config)
    assert rc.config.data.image_size == load_artifact(BUNDLED).meta.preprocessing.image_size
