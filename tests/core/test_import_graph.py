"""The core's layers: serving imports stay light, and no package of the core imports back into itself."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from harness import REPO

HEAVY = ["pneumo_core.training", "pneumo_core.training.trainer", "pneumo_core.evaluation", "matplotlib",
         "albumentations", "sklearn.model_selection"]


@pytest.mark.parametrize("module", ["pneumo_core.inference", "adapters.flask_app.app", "adapters.runpod.handler"])
def test_serving_imports_load_no_training_plotting_or_augmentation(module):
    code = (f"import json, sys; import {module}; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [], f"importing {module} loads {out.stdout.strip()}"


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _imports(path) -> set[str]:
    """Every pneumo_core module a file imports when it runs, at any level (function-level imports
    included; ``if TYPE_CHECKING:`` imports, which never run, excluded)."""
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] == "pneumo_core"}


def _unit(module: str) -> str:
    """``pneumo_core.training.trainer`` -> ``pneumo_core.training``; the root package is its own unit."""
    return ".".join(module.split(".")[:2])


def _cycle(edges: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph as a path, or [] (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_core_package_graph_has_no_cycle():
    edges: dict[str, set[str]] = defaultdict(set)
    files = sorted((REPO / "pneumo_core").rglob("*.py"))
    assert len(files) > 40
    for path in files:
        parts = path.relative_to(REPO).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for target in _imports(path):
            if _unit(target) != _unit(module):
                edges[_unit(module)].add(_unit(target))
    assert edges["pneumo_core.evaluation"] >= {"pneumo_core.inference"}, "the graph was read"
    assert _cycle(edges) == [], " -> ".join(_cycle(edges))


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) == []


def test_plugins_use_only_the_public_core_and_no_other_plugin():
    """A plugin imports ``pneumo_core``'s public names only, and no module that registers hooks
    (helper modules of a plugin package, without hooks, are fine)."""
    plugin_modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                      for p in (REPO / "plugins").rglob("*.py") if "@hookimpl" in p.read_text()}
    assert {"plugins.models.resnet18", "plugins.datasets.imagefolder"} <= plugin_modules
    problems = []
    for path in sorted((REPO / "plugins").rglob("*.py")) + sorted((REPO / "examples").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                     else [])
            for name in names:
                if name.startswith("pneumo_core."):
                    problems.append(f"{path.relative_to(REPO)} imports {name} (use `from pneumo_core import ...`)")
                if name in plugin_modules:
                    problems.append(f"{path.relative_to(REPO)} imports the plugin {name}")
    assert problems == []


def test_benchmarks_use_public_interfaces_only():
    """Benchmarks import no test helper and no plugin module, and do not edit sys.path."""
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "sys.path" not in text, f"{path.name} edits sys.path"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in {"tests", "plugins", "harness", "live_server"}, \
                    f"{path.name} imports {node.module}"
