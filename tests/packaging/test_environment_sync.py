"""environment.yml (conda) must provide what pyproject.toml requires, within pyproject's ranges."""
from __future__ import annotations

import re
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from dataclasses import dataclass

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from harness import REPO

ENV_FILE = REPO / "environment.yml"
PYPROJECT = REPO / "pyproject.toml"
CHECKED_EXTRAS = ("serve", "runpod", "onnx", "tracking")

# conda package name -> the pip distribution it provides (names canonicalised)
CONDA_TO_PIP = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "opencv": "opencv-python-headless",
    "py-opencv": "opencv-python-headless",
    "libopencv": "opencv-python-headless",
    "matplotlib-base": "matplotlib",
}


@dataclass(frozen=True)
class EnvPackage:
    name: str  # canonical pip name
    specifier: SpecifierSet
    source: str  # "conda" or "pip"
    raw: str


# -- parsing --------------------------------------------------------------------------------
_CONDA_SPEC = re.compile(r"^(?:[\w.\-/]+::)?(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<rest>.*)$")


def conda_to_specifier(version: str) -> SpecifierSet:
    """Translate a conda MatchSpec version (``=1.2``, ``1.2.*``, ``==1.2``, ``>=1,<2``, with an
    optional ``=build`` suffix) to a pip SpecifierSet."""
    version = version.strip()
    if not version:
        return SpecifierSet()
    if version.startswith("=") and not version.startswith("=="):  # fuzzy: name=1.2[=build]
        return SpecifierSet(f"=={version[1:].split('=')[0].rstrip('.*')}.*")
    if " " in version:  # "name 1.2 build" form: drop the build string
        version = version.split()[0]
    parts = []
    for part in version.split(","):
        part = part.strip()
        if not part:
            continue
        if part[0].isdigit():  # bare version: exact, or a wildcard like 1.2.*
            part = f"=={part}"
        parts.append(part)
    return SpecifierSet(",".join(parts))


def parse_conda(spec: str) -> EnvPackage:
    match = _CONDA_SPEC.match(spec.strip())
    assert match, f"cannot parse conda spec {spec!r}"
    name = canonicalize_name(match["name"])
    return EnvPackage(CONDA_TO_PIP.get(name, name), conda_to_specifier(match["rest"]), "conda", spec)


def parse_environment(data: dict) -> tuple[dict[str, EnvPackage], list[str]]:
    """Packages by canonical pip name, and the pip section's non-requirement lines (``-e .``...)."""
    packages: dict[str, EnvPackage] = {}
    options: list[str] = []
    for dep in data.get("dependencies") or []:
        if isinstance(dep, dict):
            for line in dep.get("pip") or []:
                line = str(line).strip()
                if line.startswith("-"):
                    options.append(line)
                    continue
                req = Requirement(line)
                name = canonicalize_name(req.name)
                packages[name] = EnvPackage(name, req.specifier, "pip", line)
        else:
            pkg = parse_conda(str(dep))
            packages[pkg.name] = pkg
    return packages, options


def pyproject_requirements(pyproject: dict, extras=CHECKED_EXTRAS) -> list[Requirement]:
    """Runtime dependencies plus the given extras, without self-references like pneumo[onnx]."""
    project = pyproject["project"]
    lines = list(project.get("dependencies", []))
    for extra in extras:
        lines += project.get("optional-dependencies", {}).get(extra, [])
    own = canonicalize_name(project["name"])
    return [r for r in map(Requirement, lines) if canonicalize_name(r.name) != own]


# -- specifier overlap ----------------------------------------------------------------------
def _candidates(*sets: SpecifierSet) -> list[Version]:
    """Versions at and just above every bound named in the sets, plus the extremes: if two
    conjunctions of comparisons overlap, one of these lies in the overlap."""
    out = {Version("0"), Version("99999")}
    for s in sets:
        for spec in s:
            try:
                v = Version(spec.version.removesuffix(".*"))
            except InvalidVersion:
                continue
            out |= {v, Version(f"{v.base_version}.0.0.0.1"), Version(f"{v.base_version}.99999")}
    return sorted(out)


def compatible(a: SpecifierSet, b: SpecifierSet) -> bool:
    """True when some version satisfies both specifier sets."""
    return any(v in a and v in b for v in _candidates(a, b))


def find_problems(env: dict, pyproject: dict) -> list[str]:
    """Every way ``env`` (a parsed environment.yml) disagrees with ``pyproject``."""
    packages, _ = parse_environment(env)
    problems = []
    for req in pyproject_requirements(pyproject):
        name = canonicalize_name(req.name)
        if name not in packages:
            problems.append(f"{req} is missing from environment.yml")
    for req in pyproject_requirements(pyproject, extras=tuple(pyproject["project"].get("optional-dependencies", {}))):
        pkg = packages.get(canonicalize_name(req.name))
        if pkg is not None and not compatible(pkg.specifier, req.specifier):
            problems.append(f"environment.yml's {pkg.raw!r} ({pkg.source}) contradicts pyproject's {req}")
    python = [str(d) for d in env.get("dependencies") or [] if isinstance(d, str) and parse_conda(d).name == "python"]
    requires = SpecifierSet(pyproject["project"]["requires-python"])
    if len(python) != 1:
        problems.append(f"environment.yml must pin python once, found {python}")
    elif not parse_conda(python[0]).specifier or not compatible(parse_conda(python[0]).specifier, requires):
        problems.append(f"environment.yml's {python[0]!r} is not allowed by requires-python {requires}")
    return problems


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env() -> dict:
    assert ENV_FILE.is_file(), "environment.yml is missing at the repository root"
    return yaml.safe_load(ENV_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


# -- the real files -------------------------------------------------------------------------
def test_environment_is_a_yaml_mapping_with_name_and_channels(env):
    assert isinstance(env, dict)
    assert env["name"] == "pneumo"
    assert env["channels"] == ["pytorch", "conda-forge"]
    deps = env["dependencies"]
    assert isinstance(deps, list) and deps
    pip_sections = [d for d in deps if isinstance(d, dict)]
    assert len(pip_sections) == 1 and set(pip_sections[0]) == {"pip"}
    assert "pip" in [parse_conda(str(d)).name for d in deps if isinstance(d, str)], \
        "a pip: section needs pip itself among the conda dependencies"


def test_every_runtime_requirement_and_extra_is_in_environment(env, pyproject):
    packages, _ = parse_environment(env)
    missing = [str(r) for r in pyproject_requirements(pyproject) if canonicalize_name(r.name) not in packages]
    assert not missing, f"add to environment.yml (conda-forge, or its pip: section): {missing}"


def test_environment_versions_agree_with_pyproject(env, pyproject):
    assert find_problems(env, pyproject) == []


def test_python_version_is_allowed_by_requires_python(env, pyproject):
    python = next(parse_conda(d) for d in env["dependencies"] if isinstance(d, str) and parse_conda(d).name == "python")
    requires = SpecifierSet(pyproject["project"]["requires-python"])
    assert Version("3.11") in python.specifier
    assert compatible(python.specifier, requires)


def test_torch_comes_from_conda_and_project_is_installed_by_pip(env):
    packages, options = parse_environment(env)
    assert packages["torch"].source == "conda" and packages["torch"].raw.startswith("pytorch")
    assert packages["torchvision"].source == "conda"
    assert packages["opencv-python-headless"].source == "conda"
    editable = [o for o in options if o.startswith("-e") or o.startswith("--editable")]
    assert len(editable) == 1 and re.fullmatch(r"(-e|--editable)\s+\.(\[[\w,\-]+\])?", editable[0]), editable


# -- the checker itself (so a green run means something) ------------------------------------
@pytest.mark.parametrize("conda, pip", [
    ("=2.5", "==2.5.*"), ("2.5.*", "==2.5.*"), ("==2.5.1", "==2.5.1"), (">=2.4,<=2.14.1", ">=2.4,<=2.14.1"),
    ("=2.5.1=cpu_generic_py311", "==2.5.1.*"), ("", ""),
])
def test_conda_version_translation(conda, pip):
    assert conda_to_specifier(conda) == SpecifierSet(pip)


@pytest.mark.parametrize("a, b, expected", [
    (">=2.4,<=2.14.1", ">=2.4,<=2.14.1", True),
    ("==2.5.*", ">=2.4,<=2.14.1", True),
    ("==2.3.*", ">=2.4,<=2.14.1", False),
    ("<2.0", ">=2.4", False),
    (">2.14.1", "<=2.14.1", False),
    (">=3.0", "<=2.14.1", False),
    ("", ">=1.0", True),
    (">=1.16", ">=1.16", True),
    ("==3.11.*", ">=3.10", True),
    ("==3.9.*", ">=3.10", False),
])
def test_compatible(a, b, expected):
    assert compatible(SpecifierSet(a), SpecifierSet(b)) is expected


def test_checker_reports_missing_wrong_pins_and_python(pyproject):
    bad = {"name": "pneumo", "channels": ["conda-forge"], "dependencies": [
        "python=3.9", "pytorch=2.3", "py-opencv>=4.8", "prometheus_client>=0.20",
        {"pip": ["grad-cam<1.0", "-e ."]},
    ]}
    problems = "\n".join(find_problems(bad, pyproject))
    assert "torchvision" in problems and "missing" in problems
    assert "'pytorch=2.3' (conda) contradicts pyproject's torch" in problems
    assert "'grad-cam<1.0' (pip) contradicts" in problems
    assert "requires-python" in problems
    # mapped names count as present
    assert "opencv-python-headless" not in problems
    assert "prometheus-client" not in problems
