"""Config loading, overrides and error messages (through the CLI, as users meet them)."""
from __future__ import annotations

import json

import pytest

from harness import run_cli
from pneumo_core import ConfigError
from pneumo_core.config import load_config


def test_shipped_configs_validate(repo):
    for name in ("default.yaml", "smoke.yaml", "kermany_resnet18.yaml"):  # the Kermany data may be absent
        out = run_cli("config", "validate", str(repo / "configs" / name), "--no-check-paths")
        assert out.returncode == 0, out.stderr
        assert "ok" in out.stdout


@pytest.mark.parametrize("override, key", [
    ("train.epochs=-1", "train.epochs"),
    ("model.name=nope", "model.name"),
    ("data.params.n_train=abc", "data.params.n_train"),
    ("augment.params.preset=extreme", "augment.params.preset"),
    ("train.optimiser=adam", "train.optimiser"),
])
def test_bad_values_name_the_file_and_key(repo, override, key):
    out = run_cli("config", "validate", str(repo / "configs" / "smoke.yaml"), "--set", override)
    assert out.returncode != 0
    assert f"smoke.yaml: {key}" in out.stderr
    assert f"[set on the command line: --set {override}]" in out.stderr
    assert "Traceback" not in out.stderr


def test_errors_from_the_file_are_not_blamed_on_overrides(tmp_path, repo):
    bad = tmp_path / "bad.yaml"
    bad.write_text((repo / "configs" / "smoke.yaml").read_text() + "\nextra_section: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad, ["train.epochs=2"])
    assert "extra_section" in str(err.value) and "--set" not in str(err.value)


def test_unknown_model_lists_known_ones(repo):
    out = run_cli("config", "validate", str(repo / "configs" / "smoke.yaml"), "--set", "model.name=vgg99")
    assert "unknown model 'vgg99'" in out.stderr and "resnet18" in out.stderr


def test_broken_files_are_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(lst)
    nodata = tmp_path / "nodata.yaml"
    nodata.write_text("name: x\n")
    with pytest.raises(ConfigError, match="nodata.yaml: data: Field required"):
        load_config(nodata)


def test_overrides_apply_typed_values(repo):
    rc = load_config(repo / "configs" / "smoke.yaml", ["train.epochs=7", "train.lr=0.01",
                                                       "data.params.seed=3", "train.early_stopping_patience=2"])
    assert rc.config.train.epochs == 7 and rc.config.train.lr == 0.01
    assert rc.data_params.seed == 3 and rc.config.train.early_stopping_patience == 2
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(repo / "configs" / "smoke.yaml", ["train.epochs"])


def test_schema_is_json_schema():
    out = run_cli("config", "schema")
    assert out.returncode == 0
    schema = json.loads(out.stdout)
    assert schema["type"] == "object"
    assert {"model", "data", "augment", "train", "serve", "hpc"} <= set(schema["properties"])
    assert "data" in schema["required"]


def test_temporal_selection_needs_a_temporal_split(repo):
    out = run_cli("config", "validate", str(repo / "configs" / "smoke.yaml"), "--set", "data.select_on=temporal")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "select_on: temporal needs temporal_fraction > 0" in out.stderr
    ok = run_cli("config", "validate", str(repo / "configs" / "smoke.yaml"), "--set", "data.select_on=temporal",
                 "--set", "data.temporal_fraction=0.1")
    assert ok.returncode == 0, ok.stderr


KUBE_PLUGIN = """
from pydantic import BaseModel, ConfigDict
from pneumo_core import ConfigSectionSpec, hookimpl

class Kube(BaseModel):
    model_config = ConfigDict(extra="forbid")
    namespace: str = "default"
    gpus: int = 0

@hookimpl
def pneumo_config_sections():
    return [ConfigSectionSpec(name="kube", model=Kube)]
"""


def test_a_plugin_owns_a_config_section(tmp_path, repo):
    (tmp_path / "kube_section.py").write_text(KUBE_PLUGIN)
    config = tmp_path / "exp.yaml"
    config.write_text((repo / "configs" / "smoke.yaml").read_text()
                      + "\nplugins: [kube_section.py]\nkube: {namespace: radiology, gpus: 2}\n")
    rc = load_config(config)
    assert (rc.section("kube").namespace, rc.section("kube").gpus) == ("radiology", 2)
    assert rc.section("hpc").time == "00:10:00", "pneumo's hpc package registers its section the same way"
    with pytest.raises(ConfigError, match=r"exp.yaml: kube.gpus: Input should be a valid integer"):
        load_config(config, ["kube.gpus=many"])
    with pytest.raises(ConfigError, match=r"exp.yaml: kub: unknown top-level key \(known: .*hpc.*kube"):
        load_config(config, ["kub.gpus=1"])
    schema = json.loads(run_cli("config", "schema").stdout)
    assert schema["properties"]["hpc"]["properties"]["partition"] and schema["additionalProperties"] is False
