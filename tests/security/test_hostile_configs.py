"""Hostile config files get a clear error quickly: alias bombs, deep nesting, huge files, infinite values."""
from __future__ import annotations

import pytest

from harness import run_cli

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
data: {name: synthetic, params: {n_train: *i}}
"""


def _validate(path, *extra):
    # the timeout bounds the test; a regression shows as a timeout, not as a slow pass
    return run_cli("config", "validate", str(path), *extra, timeout=60)


def test_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    assert path.stat().st_size < 600
    out = _validate(path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "aliases are expanded" in out.stderr


@pytest.mark.parametrize("depth", [100, 10_000])
def test_deep_nesting_is_refused(tmp_path, depth):
    path = tmp_path / "deep.yaml"
    path.write_text("data: " + "[" * depth + "]" * depth + "\n")
    out = _validate(path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "nested" in out.stderr and "deep" in out.stderr


def test_huge_file_is_refused(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: x\n" + "# padding\n" * 200_000)
    out = _validate(path)
    assert out.returncode == 2 and "a config file is at most" in out.stderr


@pytest.mark.parametrize("override, key", [("train.lr=.inf", "train.lr"), ("train.lr=.nan", "train.lr"),
                                           ("train.epochs=100000000000000000000000000", "train.epochs"),
                                           ("train.warmup_epochs=1.0e+30", "train.warmup_epochs"),
                                           ("train.threshold.value=.nan", "train.threshold.value")])
def test_infinite_or_absurd_values_are_refused(repo, override, key):
    out = _validate(repo / "configs" / "smoke.yaml", "--set", override)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"smoke.yaml: {key}" in out.stderr


def test_a_deep_override_is_refused(repo):
    out = _validate(repo / "configs" / "smoke.yaml", "--set", "train.lr=" + "[" * 5000 + "]" * 5000)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "nested" in out.stderr


def test_validate_runs_no_plugin_code_unless_asked(tmp_path):
    """`config validate` on someone else's config must not execute the .py plugins it lists."""
    marker = tmp_path / "ran.txt"
    (tmp_path / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from pneumo_core import ModelSpec, hookimpl\n"
        "@hookimpl\ndef pneumo_models():\n"
        "    from plugins.models.resnet18 import pneumo_models as base\n"
        "    return [ModelSpec(name='evil-net', build=base()[0].build, params_model=base()[0].params_model,\n"
        "                      cam_layer=base()[0].cam_layer)]\n")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("plugins: [./evil.py]\nmodel: {name: evil-net}\ndata: {name: synthetic}\n")
    out = _validate(cfg)
    assert out.returncode == 2 and not marker.exists(), "validate imported a plugin file"
    assert "not imported: ./evil.py" in out.stderr and "--load-plugins" in out.stderr
    plain = tmp_path / "plain.yaml"  # a config whose sections need no listed plugin still validates
    plain.write_text("plugins: [./evil.py]\nmodel: {name: resnet18}\ndata: {name: synthetic}\n")
    assert _validate(plain).returncode == 0 and not marker.exists()
    trusted = _validate(cfg, "--load-plugins")
    assert trusted.returncode == 0, trusted.stderr
    assert marker.read_text() == "ran"
