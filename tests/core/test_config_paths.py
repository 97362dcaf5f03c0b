"""Data paths in a config are read from the config file's folder; `config validate` checks them."""
from __future__ import annotations

import numpy as np
from PIL import Image

from harness import run_cli
from pneumo_core.config import load_config


def _kermany_folder(root):
    for label, prefix in (("NORMAL", "IM-0{:03d}-0001.jpeg"), ("PNEUMONIA", "person{}_bacteria_1.jpeg")):
        (root / "train" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((32, 32), 40 * i, np.uint8)).save(root / "train" / label / prefix.format(i + 1))


def _config(folder, root: str):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(f"data:\n  name: imagefolder\n  params: {{root: {root}}}\n  image_size: 32\n")
    return path


def test_relative_data_paths_are_read_from_the_config_folder_wherever_the_command_runs(tmp_path, monkeypatch):
    _kermany_folder(tmp_path / "project" / "data" / "cxr")
    config = _config(tmp_path / "project" / "configs", "../data/cxr")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc = load_config(config)
    assert rc.data_params.root == tmp_path / "project" / "data" / "cxr"
    table = rc.pm.dataset("imagefolder").build(rc.data_params)
    assert len(table.samples) == 6
    assert rc.config.data.params["root"] == "../data/cxr", "the config as written is kept (and its fingerprint)"
    out = run_cli("config", "validate", str(config), cwd=elsewhere)
    assert out.returncode == 0, out.stderr


def test_a_path_set_on_the_command_line_is_relative_to_the_working_folder(tmp_path, monkeypatch):
    _kermany_folder(tmp_path / "cwd" / "mine")
    config = _config(tmp_path / "configs", "../nowhere")
    monkeypatch.chdir(tmp_path / "cwd")
    rc = load_config(config, ["data.params.root=mine"])
    assert rc.data_params.root == tmp_path / "cwd" / "mine"
    out = run_cli("config", "validate", str(config), "--set", "data.params.root=mine", cwd=tmp_path / "cwd")
    assert out.returncode == 0, out.stderr
    whole = load_config(config, ["data.params={root: mine}"])  # the object above the path, set whole
    assert whole.data_params.root == tmp_path / "cwd" / "mine"


def test_validate_names_missing_data_and_can_skip_the_check(tmp_path):
    config = _config(tmp_path / "configs", "../data/absent")
    out = run_cli("config", "validate", str(config))
    assert out.returncode == 2
    assert f"data.params.root: {tmp_path / 'data' / 'absent'} does not exist" in out.stderr
    assert "--no-check-paths" in out.stderr and "Traceback" not in out.stderr
    skipped = run_cli("config", "validate", str(config), "--no-check-paths")
    assert skipped.returncode == 0 and "ok" in skipped.stdout, skipped.stderr
    train = run_cli("train", str(config), "--run-dir", str(tmp_path / "run"))
    assert train.returncode == 2 and str(tmp_path / "data" / "absent") in train.stderr, train.stderr


def test_path_fields_are_found_in_every_spelling(tmp_path):
    from pathlib import Path
    from typing import Optional

    from pydantic import BaseModel

    from pneumo_core.config.paths import resolve_paths

    class Params(BaseModel):
        a: Path
        b: Optional[Path] = None
        c: Path | None = None
        d: str = "text/not/a/path"

    resolved = resolve_paths(Params(a="x", b="y", c="z"), tmp_path)
    assert (resolved.a, resolved.b, resolved.c) == (tmp_path / "x", tmp_path / "y", tmp_path / "z")
    assert resolved.d == "text/not/a/path"
