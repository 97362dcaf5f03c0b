"""Load, override and validate experiment configs, with errors that name file and key path."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from pneumo_core.config.paths import missing_paths, resolve_paths
from pneumo_core.config.schema import DistillSection, ExperimentConfig
from pneumo_core.errors import ConfigError, PluginError
from pneumo_core.plugin_manager import PneumoPluginManager, get_plugin_manager, registered_plugin_modules

_PLUGIN_SECTIONS = {"model": PneumoPluginManager.model, "data": PneumoPluginManager.dataset,
                    "augment": PneumoPluginManager.augmentation}  # config section -> typed getter


@dataclass
class ResolvedConfig:
    """A validated config, the plugin manager it was resolved with, and typed plugin params."""

    config: ExperimentConfig
    pm: PneumoPluginManager
    source: str
    model_params: BaseModel
    data_params: BaseModel
    augment_params: BaseModel
    logger_params: tuple[BaseModel, ...] = ()
    sections: dict[str, BaseModel] = field(default_factory=dict)  # plugin-owned sections, e.g. "hpc"
    distill: Optional[DistillSection] = None  # train.distill, its teacher path resolved

    def section(self, name: str) -> BaseModel:
        """The validated plugin-owned section ``name`` (its defaults when the config has none)."""
        if name not in self.sections:
            raise ConfigError(f"{self.source}: no plugin registers a config section {name!r}; is the package "
                              "that owns it installed?")
        return self.sections[name]

    def missing_paths(self) -> list[str]:
        """Each path parameter of the model, data and augment plugins and the distillation teacher
        (inputs, already resolved against the config's folder) that names nothing on disk, as ``"data.params.root: /x does
        not exist"``. Loggers' paths are outputs: they are resolved, not checked."""
        inputs = [("model.params", self.model_params), ("data.params", self.data_params),
                  ("augment.params", self.augment_params), ("train.distill", self.distill)]
        return [line for where, params in inputs if params is not None for line in missing_paths(where, params)]


def _format_errors(source: str, err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix.split(".") if prefix else []) + list(e["loc"]))
        got = e.get("input")
        shown = json.dumps(got, default=str)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        got_s = "" if isinstance(got, dict) or e["type"] == "missing" else f" (got {shown})"
        lines.append(f"{source}: {loc or '<root>'}: {e['msg']}{got_s}")
    return "\n".join(lines)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a nested dict in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. train.epochs=3")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        except RecursionError:
            raise ConfigError(f"--set {key}: value nested too deeply") from None
        _check_size(value, Path(f"--set {key}"))
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return data


# A config is small: these bounds refuse hostile YAML (alias bombs, deep nesting) before anything
# walks the parsed data (validation, error messages).
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONFIG_NODES = 100_000  # values after expanding aliases
MAX_CONFIG_DEPTH = 40


def _check_size(data: Any, path: Path) -> None:
    """Count the values of ``data`` as a consumer would see them (aliases expanded), within bounds."""
    count, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise ConfigError(f"{path}: more than {MAX_CONFIG_NODES:,} values once YAML aliases are expanded "
                              "(an alias bomb?); write the config out without nested aliases")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{path}: nested more than {MAX_CONFIG_DEPTH} levels deep; a config has a few sections")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for kv in node.items() for v in kv)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping, turning every failure into a ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file") from exc
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to parse; a config has a few sections") from None
    _check_size(data, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def resolve(data: dict[str, Any], source: str = "<config>", base_dir: Optional[Path] = None,
            pm: Optional[PneumoPluginManager] = None, load_plugins: bool = True,
            cwd_keys: Sequence[str] = ()) -> ResolvedConfig:
    """Validate a config dict and each plugin's params against the plugin's own schema.

    Relative ``Path`` params are joined to ``base_dir`` (the config file's folder), those whose
    key is in ``cwd_keys`` (set on the command line) to the working folder; see ``config.paths``.
    With ``load_plugins=False`` only plugins of installed packages (entry points) load: the
    ``.py`` files and other modules the config lists are not imported (their code would run)."""
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None
    registered = registered_plugin_modules()
    listed = config.plugins if load_plugins else [p for p in config.plugins if p in registered]
    skipped = [p for p in config.plugins if p not in listed]
    try:
        if pm is None:
            pm = get_plugin_manager(listed, base_dir)
        else:
            pm.load_config_plugins(listed, base_dir)
    except PluginError as exc:
        raise ConfigError(f"{source}: plugins: {exc}") from None
    hint = (f" (not imported: {', '.join(skipped)}, whose code would run; pass --load-plugins if you trust "
            "them)") if skipped else ""
    params: dict[str, BaseModel] = {}
    for section, getter in _PLUGIN_SECTIONS.items():
        ref = getattr(config, section)
        try:
            spec = getter(pm, ref.name)
        except PluginError as exc:
            raise ConfigError(f"{source}: {section}.name: {exc}{hint}") from None
        try:
            params[section] = resolve_paths(spec.params_model.model_validate(ref.params), base_dir, f"{section}.params",
                                            cwd_keys)
        except ValidationError as exc:
            raise ConfigError(_format_errors(source, exc, f"{section}.params")) from None
    loggers = []
    for i, ref in enumerate(config.loggers):
        try:
            loggers.append(resolve_paths(pm.logger(ref.name).params_model.model_validate(ref.params), base_dir,
                                         f"loggers.{i}.params", cwd_keys))
        except PluginError as exc:
            raise ConfigError(f"{source}: loggers.{i}.name: {exc}{hint}") from None
        except ValidationError as exc:
            raise ConfigError(_format_errors(source, exc, f"loggers.{i}.params")) from None
    sections = {}
    extra = dict(config.model_extra or {})
    for name in pm.names("config_sections"):
        try:
            sections[name] = pm.config_section(name).model.model_validate(extra.pop(name, None) or {})
        except ValidationError as exc:
            raise ConfigError(_format_errors(source, exc, name)) from None
    if extra:
        known = ", ".join(sorted(set(ExperimentConfig.model_fields) | set(sections)))
        raise ConfigError("\n".join(f"{source}: {key}: unknown top-level key (known: {known}; a plugin may "
                                     f"add a section){hint}" for key in extra))
    distill = config.train.distill
    if distill is not None:
        distill = resolve_paths(distill, base_dir, "train.distill", cwd_keys)
    return ResolvedConfig(config, pm, source, params["model"], params["data"], params["augment"], tuple(loggers),
                          sections, distill)


def load_config(path: str | Path, overrides: Sequence[str] = (),
                pm: Optional[PneumoPluginManager] = None, load_plugins: bool = True) -> ResolvedConfig:
    """Read a YAML config, apply ``--set`` overrides, validate it and its plugins' params
    (``load_plugins``: see :func:`resolve`)."""
    path = Path(path)
    data = apply_overrides(read_yaml(path), overrides)
    try:
        return resolve(data, str(path), path.resolve().parent, pm, load_plugins,
                       [item.split("=", 1)[0].strip() for item in overrides])
    except ConfigError as exc:
        raise ConfigError(_blame_overrides(str(exc), str(path), overrides)) from None


def _blame_overrides(message: str, source: str, overrides: Sequence[str]) -> str:
    """Mark each ``source: key: ...`` error line whose key an override set, so the user looks
    at the command line rather than at the file."""
    lines = []
    for line in message.splitlines():
        loc = line[len(source) + 2:].split(":", 1)[0] if line.startswith(f"{source}: ") else None
        for item in overrides:
            key = item.split("=", 1)[0].strip()
            if loc and (loc == key or loc.startswith(key + ".") or key.startswith(loc + ".")):
                line += f" [set on the command line: --set {item}]"
                break
        lines.append(line)
    return "\n".join(lines)


def json_schema(pm: Optional[PneumoPluginManager] = None) -> dict[str, Any]:
    """JSON Schema of the experiment config, with the sections plugins register (``hpc``...);
    plugin params are free-form objects here."""
    schema = ExperimentConfig.model_json_schema()
    pm = pm or get_plugin_manager()
    for name in pm.names("config_sections"):
        section = pm.config_section(name).model.model_json_schema()
        schema.setdefault("$defs", {}).update(section.pop("$defs", {}))
        schema["properties"][name] = {**section, "description": pm.config_section(name).description}
    schema["additionalProperties"] = False
    return schema
