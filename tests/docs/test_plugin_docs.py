"""docs/plugins.md documents every hook of pneumo_core.hookspecs, with its exact signature."""
from __future__ import annotations

import ast
import inspect
import re

import pytest

import pneumo_core
from harness import REPO
from pneumo_core import hookspecs

GUIDE = REPO / "docs" / "plugins.md"
HEADING = re.compile(r"^### (\w+)\s*$", re.M)


def hookspec_functions() -> dict[str, object]:
    """Functions marked with pluggy's HookspecMarker("pneumo") (attribute ``pneumo_spec``)."""
    return {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, "pneumo_spec")}


def guide() -> str:
    assert GUIDE.is_file(), "docs/plugins.md is missing"
    return GUIDE.read_text(encoding="utf-8")


def section(text: str, name: str) -> str:
    """The text under ``### name`` up to the next heading of level 2 or 3."""
    match = re.search(rf"^### {re.escape(name)}\s*$", text, re.M)
    assert match, f"docs/plugins.md has no '### {name}' heading"
    end = re.search(r"^#{2,3} ", text[match.end():], re.M)
    return text[match.end():match.end() + end.start()] if end else text[match.end():]


def documented_signature(body: str, name: str) -> list[str]:
    """Parameter names of the ``def name(...)`` line in the first code block of a section."""
    blocks = re.findall(r"^```[\w-]*\n(.*?)^```", body, re.M | re.S)
    assert blocks, f"'### {name}' has no code block"
    lines = [line.strip() for line in blocks[0].splitlines() if line.strip().startswith(f"def {name}(")]
    assert lines, f"the first code block under '### {name}' has no 'def {name}(...)' line"
    tree = ast.parse(lines[0].rstrip(":") + ": ...")
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    return [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]


HOOKS = hookspec_functions()


def test_hookspecs_are_found():
    assert {"pneumo_models", "pneumo_datasets", "pneumo_augmentations", "pneumo_train_end"} <= set(HOOKS)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hookspec_has_a_docstring(name):
    doc = inspect.getdoc(HOOKS[name])
    assert doc and doc.strip(), f"{name} needs a docstring: when it is called, with what, what it returns"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_documented_with_its_signature(name):
    body = section(guide(), name)
    expected = list(inspect.signature(HOOKS[name]).parameters)
    assert documented_signature(body, name) == expected, \
        f"docs/plugins.md documents {name} with other parameters than hookspecs.py ({expected})"
    prose = re.sub(r"^```.*?^```", "", body, flags=re.M | re.S)
    assert len(prose.split()) >= 10, f"'### {name}' needs a contract, not just a signature"
    assert body.count("```") >= 4, f"'### {name}' needs an example implementation after its signature"
    assert "@hookimpl" in body and f"def {name}(" in body.split("```", 2)[2]


def test_guide_documents_no_stale_hooks():
    text = guide()
    headed = {h for h in HEADING.findall(text) if h.startswith("pneumo_")}
    assert headed <= set(HOOKS), f"documented but not in hookspecs.py: {sorted(headed - set(HOOKS))}"
    defined = set(re.findall(r"\bdef (pneumo_\w+)\s*\(", text))
    assert defined <= set(HOOKS), f"code in docs/plugins.md defines unknown hooks: {sorted(defined - set(HOOKS))}"
    assert headed == set(HOOKS)


def test_guide_documents_records_discovery_and_conflicts():
    text = guide()
    for record in ("ModelSpec", "DatasetSpec", "Sample", "SampleTable", "AugmentationSpec", "LoggerSpec",
                   "ConfigSectionSpec", "HealthCheck", "RunInfo"):
        assert re.search(rf"^### {record}\s*$", text, re.M), f"no '### {record}' section"
        assert record in pneumo_core.__all__
    for var in ("PNEUMO_PLUGINS", "PNEUMO_DISABLE_PLUGINS", "PNEUMO_TRACE_PLUGINS"):
        assert var in text
    assert "[project.entry-points.pneumo]" in text and "plugins:" in text
    assert "## Name conflicts" in text and "examples/pneumo-tinycnn" in text


def test_model_spec_fields_are_documented():
    """The record tables name every field the dataclasses have."""
    import dataclasses

    text = guide()
    for record in (pneumo_core.ModelSpec, pneumo_core.DatasetSpec, pneumo_core.Sample,
                   pneumo_core.AugmentationSpec, pneumo_core.LoggerSpec, pneumo_core.ConfigSectionSpec,
                   pneumo_core.HealthCheck, pneumo_core.RunInfo,
                   pneumo_core.SampleTable):
        body = section(text, record.__name__)
        for field in dataclasses.fields(record):
            assert f"`{field.name}" in body, f"'### {record.__name__}' does not mention field {field.name}"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)


def test_python_examples_compile_and_register_as_valid_hookimpls():
    """Every Python block is valid Python; every example with @hookimpl registers with pluggy,
    which checks that its functions are known hooks taking only the spec's arguments."""
    import types

    from pneumo_core.plugin_manager import PneumoPluginManager

    examples = 0
    for i, block in enumerate(python_blocks(guide())):
        source = block if not re.fullmatch(r"def \w+\(.*\)( -> .+)?\n", block) else block.rstrip() + ": ...\n"
        code = compile(source, f"docs/plugins.md python block {i}", "exec")
        if "@hookimpl" not in block:
            continue
        module = types.ModuleType(f"docs_example_{i}")
        exec(code, module.__dict__)  # imports only; hook bodies are not run
        pm = PneumoPluginManager()
        pm.register(module, name=module.__name__)
        assert pm.get_hookcallers(module), f"block {i} implements no hook"
        examples += 1
    assert examples >= len(HOOKS)
