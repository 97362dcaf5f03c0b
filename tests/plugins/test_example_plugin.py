"""examples/pneumo-tinycnn, the template for third-party plugins, installs and works end to end.

The example is installed with pip into a temporary ``--target`` folder (its dist-info carries the
entry point), and the CLI runs in subprocesses with that folder on PYTHONPATH: exactly how
pneumo finds a plugin installed from PyPI, without touching the project's venv.
"""
from __future__ import annotations

import ast
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO, run_cli

EXAMPLE = REPO / "examples" / "pneumo-tinycnn"
PACKAGE = EXAMPLE / "pneumo_tinycnn"
SMALL = ["--set", "model.name=tinycnn", "--set", "model.params.width=8", "--set", "model.params.depth=3",
         "--set", "name=tinycnn-smoke", "--set", "train.epochs=1", "--set", "train.bootstrap=20",
         "--set", "train.threads=1", "--set", "data.params.n_train=64", "--set", "data.params.n_val=32",
         "--set", "data.params.n_test=32", "--set", "data.params.size=64", "--set", "data.image_size=64"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example installed (no deps, no build isolation, offline) into a --target folder."""
    tmp = tmp_path_factory.mktemp("tinycnn")
    src = tmp / "src"  # build from a copy: an in-tree build would leave build/ and egg-info behind
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--disable-pip-version-check", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def plugin_env(site: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}


# -- the package itself ---------------------------------------------------------------------
def test_example_is_a_separate_distribution_with_a_pneumo_entry_point():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert meta["build-system"]["build-backend"] == "setuptools.build_meta"
    assert meta["project"]["name"] == "pneumo-tinycnn"
    assert meta["project"]["version"] == "0.1.0"
    assert any(d.split(">")[0].split("=")[0].strip() == "pneumo" for d in meta["project"]["dependencies"])
    assert meta["project"]["entry-points"]["pneumo"] == {"tinycnn": "pneumo_tinycnn.plugin"}
    assert (EXAMPLE / "README.md").is_file()


def test_example_imports_only_public_pneumo_names():
    """Rules of the house: a plugin imports pneumo_core's public names, never pneumo's plugins."""
    import pneumo_core

    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in (
                    "pneumo_core", "plugins", "adapters", "hpc"):
                assert node.module == "pneumo_core", f"{path.name}: imports {node.module}"
                for alias in node.names:
                    assert alias.name in pneumo_core.__all__, f"{path.name}: {alias.name} is not public"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] not in ("pneumo_core", "plugins", "adapters", "hpc"), \
                        f"{path.name}: import {alias.name}"


def test_model_params_build_and_cam_layer(monkeypatch):
    import torch
    from pydantic import ValidationError

    from pneumo_core import ModelSpec

    monkeypatch.syspath_prepend(str(EXAMPLE))  # the source folder: no dist-info, no entry point leak
    from pneumo_tinycnn import plugin
    from pneumo_tinycnn.model import ConvBlock, TinyCNNParams

    (spec,) = plugin.pneumo_models()
    assert isinstance(spec, ModelSpec) and spec.name == "tinycnn"
    assert spec.params_model is TinyCNNParams
    assert set(TinyCNNParams.model_fields) == {"width", "depth", "dropout"}
    with pytest.raises(ValidationError):
        TinyCNNParams.model_validate({"widht": 8})  # typos are errors
    with pytest.raises(ValidationError):
        TinyCNNParams.model_validate({"depth": 0})
    with pytest.raises(ValidationError):
        TinyCNNParams.model_validate({"dropout": 1.0})

    params = TinyCNNParams.model_validate({"width": 4, "depth": 3, "dropout": 0.2})
    model = spec.build(params, 1, 2, False).eval()
    seen = []
    layer = spec.cam_layer(model)
    assert isinstance(layer, ConvBlock) and layer is model.blocks[-1]
    layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        logits = model(torch.zeros(2, 1, 32, 32))
    assert logits.shape == (2, 2)
    assert seen == [torch.Size([2, 16, 8, 8])]  # last block: width * 2**(depth-1) channels, 2 pools
    assert len(model.blocks) == 3


# -- installed: discovery, training, prediction ---------------------------------------------
def test_main_cli_works_without_the_example():
    out = run_cli("plugins", "--json")
    assert out.returncode == 0, out.stderr
    names = {i["name"] for i in json.loads(out.stdout)}
    assert "resnet18" in names and "tinycnn" not in names


def test_plugins_lists_tinycnn_from_its_entry_point(site):
    out = run_cli("plugins", env=plugin_env(site))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    row = next(i for i, line in enumerate(lines) if line.split()[:1] == ["tinycnn"])
    assert lines[row].split(None, 1)[1].strip() == "entry point (pneumo-tinycnn 0.1.0)"
    assert "module pneumo_tinycnn.plugin" in lines[row + 1] and "model:tinycnn" in lines[row + 1]
    info = {i["name"]: i for i in json.loads(run_cli("plugins", "--json", env=plugin_env(site)).stdout)}
    assert info["tinycnn"]["provides"] == ["model:tinycnn"]
    assert info["resnet18"]["origin"] == "builtin"  # built-ins still load, first


def test_train_and_predict_with_tinycnn(site, tmp_path):
    env = plugin_env(site)
    run_dir = tmp_path / "run"
    out = run_cli("train", str(REPO / "configs" / "smoke.yaml"), *SMALL, "--run-dir", str(run_dir),
                  "--no-progress", env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    artifact = Path(out.stdout.strip().splitlines()[-1].removeprefix("artifact: "))
    if not artifact.is_absolute():
        artifact = REPO / artifact
    meta = json.loads((artifact / "model.json").read_text())
    assert meta["model"]["name"] == "tinycnn"
    assert meta["model"]["params"] == {"width": 8, "depth": 3, "dropout": 0.1}
    assert (artifact / "model.safetensors").is_file()

    from PIL import Image

    from plugins.datasets.synthetic.phantom import render_phantom

    image = tmp_path / "phantom.png"
    buf = io.BytesIO()
    Image.fromarray(render_phantom(1, 96, 3)).save(buf, format="PNG")
    image.write_bytes(buf.getvalue())
    heatmaps = tmp_path / "heatmaps"
    pred = run_cli("predict", str(artifact), str(image), "--json", "--heatmap-dir", str(heatmaps), env=env)
    assert pred.returncode == 0, pred.stderr
    response = json.loads(pred.stdout)
    (result,) = response["results"]
    assert result["label"] in meta["classes"]
    assert 0.0 <= result["probability"] <= 1.0
    assert response["model"]["name"] == "tinycnn-smoke"
    png = (heatmaps / "phantom_gradcam.png").read_bytes()
    assert png.startswith(b"\x89PNG")  # Grad-CAM found the plugin's cam_layer

    # without the plugin installed the artifact cannot be rebuilt, and the error says why
    missing = run_cli("predict", str(artifact), str(image))
    assert missing.returncode != 0
    assert "unknown model 'tinycnn'" in missing.stderr
