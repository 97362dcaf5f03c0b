"""Plugin discovery, origins, restriction, conflicts, and third-party registration."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from harness import run_cli
from pneumo_core import PluginError
from pneumo_core.config import load_config
from pneumo_core.plugin_manager import get_plugin_manager

BUILTINS = {"resnet18", "timm", "imagefolder", "csv", "medmnist", "synthetic", "albumentations"}

PLUGIN_SRC = textwrap.dedent('''
    import torch
    from pneumo_core import ModelSpec, hookimpl

    def build(params, in_chans, num_classes, load_pretrained):
        return torch.nn.Sequential(torch.nn.Conv2d(in_chans, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten(), torch.nn.Linear(4, num_classes))

    @hookimpl
    def pneumo_models():
        return [ModelSpec(name="{name}", build=build, cam_layer=lambda m: m[0])]
''')


def test_cli_lists_builtins_with_origin():
    out = run_cli("plugins", "--json")
    assert out.returncode == 0, out.stderr
    import json

    infos = {i["name"]: i for i in json.loads(out.stdout)}
    assert BUILTINS <= set(infos)
    for name in BUILTINS:
        assert infos[name]["origin"] == "builtin"
    assert "model:resnet18" in infos["resnet18"]["provides"]
    assert "dataset:imagefolder" in infos["imagefolder"]["provides"]


def test_env_restricts_plugins(monkeypatch):
    monkeypatch.setenv("PNEUMO_PLUGINS", "resnet18,synthetic")
    pm = get_plugin_manager()
    assert pm.names("models") == ["resnet18"]
    assert pm.names("datasets") == ["synthetic"]
    monkeypatch.setenv("PNEUMO_PLUGINS", "")
    monkeypatch.setenv("PNEUMO_DISABLE_PLUGINS", "timm")
    assert "timm" not in get_plugin_manager().names("models")


def test_entry_point_plugin_from_a_distribution_on_sys_path(tmp_path, monkeypatch):
    """A third-party distribution (dist-info with entry_points.txt) is discovered like a built-in."""
    (tmp_path / "acme_xray.py").write_text(PLUGIN_SRC.format(name="acme-net"))
    dist = tmp_path / "acme_xray-1.2.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-xray\nVersion: 1.2.0\n")
    (dist / "entry_points.txt").write_text("[pneumo]\nacme = acme_xray\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = get_plugin_manager()
    assert pm.model("acme-net").name == "acme-net"
    info = {i.name: i for i in pm.describe()}["acme"]
    assert info.origin == "entry point (acme-xray 1.2.0)"
    order = [name for name, _ in pm.list_name_plugin()]
    assert order.index("resnet18") < order.index("acme"), "built-ins load before third-party plugins"


def test_config_listed_module_and_file_plugins(tmp_path, monkeypatch, repo):
    (tmp_path / "mod_plugin.py").write_text(PLUGIN_SRC.format(name="from-module"))
    (tmp_path / "file_plugin.py").write_text(PLUGIN_SRC.format(name="from-file"))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("plugins: [mod_plugin, ./file_plugin.py]\nmodel: {name: from-file}\ndata: {name: synthetic}\n")
    rc = load_config(cfg)
    assert rc.config.model.name == "from-file"
    assert rc.pm.model("from-module")
    origins = {i.name: i.origin for i in rc.pm.describe()}
    assert origins["mod_plugin"] == "config (mod_plugin)"
    assert origins["file_plugin"].startswith("config (") and "file_plugin.py" in origins["file_plugin"]
    # the CLI sees it too, once told to run the plugins' code
    out = run_cli("config", "validate", str(cfg), "--load-plugins", env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr


def test_name_conflict_names_both_plugins(tmp_path):
    (tmp_path / "clash.py").write_text(PLUGIN_SRC.format(name="resnet18"))
    pm = get_plugin_manager()
    pm.load_config_plugins([str(tmp_path / "clash.py")])
    with pytest.raises(PluginError) as err:
        pm.model("resnet18")
    assert "'resnet18'" in str(err.value) and "plugin 'resnet18'" in str(err.value) and "plugin 'clash'" in str(err.value)


def test_every_name_conflict_is_reported_at_once(tmp_path):
    (tmp_path / "clash2.py").write_text(
        "from pneumo_core import DatasetSpec, ModelSpec, hookimpl\n"
        "@hookimpl\n"
        "def pneumo_models():\n"
        "    return [ModelSpec(name='ResNet18 ', build=None, cam_layer=None), ModelSpec(name='timm', build=None, cam_layer=None)]\n"
        "@hookimpl\n"
        "def pneumo_datasets():\n"
        "    return [DatasetSpec(name='csv', build=None)]\n")
    pm = get_plugin_manager([str(tmp_path / "clash2.py")])
    with pytest.raises(PluginError) as err:
        pm.dataset("synthetic")
    message = str(err.value)
    for clash in ("model name 'resnet18'", "model name 'timm'", "dataset name 'csv'"):
        assert clash in message, message


@pytest.mark.parametrize("bad", ["", "  ", "has space", "-dash-first", "sl/ash"])
def test_record_names_are_checked(bad):
    from pneumo_core import ModelSpec

    with pytest.raises(ValueError, match="must be letters, digits"):
        ModelSpec(name=bad, build=None, cam_layer=None)
    assert ModelSpec(name=" ResNet18 ", build=None, cam_layer=None).name == "resnet18"
    assert get_plugin_manager().model("ResNet18").name == "resnet18", "lookups are normalised too"


def test_missing_and_broken_plugins_are_clear(tmp_path):
    pm = get_plugin_manager()
    with pytest.raises(PluginError, match="cannot be imported"):
        pm.load_config_plugins(["no_such_module_xyz"])
    with pytest.raises(PluginError, match="not found"):
        pm.load_config_plugins(["./missing.py"], tmp_path)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="failed to import: boom"):
        pm.load_config_plugins(["broken.py"], tmp_path)
    with pytest.raises(PluginError, match="unknown model 'nope'.*Known: resnet18, timm"):
        pm.model("nope")


def test_core_imports_no_web_framework_or_plugin_module():
    """pneumo_core, fully imported, pulls in no Flask, RunPod or plugins.* module."""
    import subprocess

    code = textwrap.dedent('''
        import importlib, pkgutil, sys
        import pneumo_core
        for m in pkgutil.walk_packages(pneumo_core.__path__, "pneumo_core."):
            importlib.import_module(m.name)
        bad = sorted(n for n in sys.modules if n.split(".")[0] in ("flask", "flask_restx", "runpod", "plugins"))
        print(",".join(bad))
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_core_source_never_imports_plugins_by_name():
    import ast

    import pneumo_core

    root = Path(pneumo_core.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] not in ("plugins", "flask", "flask_restx", "runpod", "adapters", "hpc"), \
                    f"{path} imports {name}"


def test_a_hook_returning_the_wrong_record_type_is_named(tmp_path):
    (tmp_path / "sloppy.py").write_text(
        "from pneumo_core import hookimpl\n@hookimpl\ndef pneumo_models():\n    return [{'name': 'x'}]\n")
    pm = get_plugin_manager()
    pm.load_config_plugins([str(tmp_path / "sloppy.py")])
    with pytest.raises(PluginError, match="plugin 'sloppy': pneumo_models\\(\\) must return ModelSpec records, got dict"):
        pm.model("resnet18")
