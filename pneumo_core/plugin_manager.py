"""The plugin manager: loads plugins in a fixed order and builds the registry of records.

Load order: pneumo's own built-ins (entry points of the ``pneumo`` distribution), then entry
points of other installed distributions (group ``pneumo``), then modules or ``.py`` files
listed in a config's ``plugins:``.

Environment:
- ``PNEUMO_PLUGINS=a,b``: load only these plugins (by entry-point or module name).
- ``PNEUMO_DISABLE_PLUGINS=a,b``: never load these.
- ``PNEUMO_TRACE_PLUGINS=1``: print every hook call and result to stderr.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterable, Optional, Sequence, TypeVar

import pluggy

import pneumo_core.hookspecs as hookspecs
from pneumo_core.errors import PluginError
from pneumo_core.records import (AugmentationSpec, ConfigSectionSpec, DatasetSpec, LoggerSpec, ModelSpec, Record,
                                 normalize_name)

hookimpl = pluggy.HookimplMarker("pneumo")
ENTRY_POINT_GROUP = "pneumo"
_KINDS = {"models": "pneumo_models", "datasets": "pneumo_datasets", "augmentations": "pneumo_augmentations",
          "loggers": "pneumo_loggers", "config_sections": "pneumo_config_sections"}
_RECORD_TYPES = {"models": ModelSpec, "datasets": DatasetSpec, "augmentations": AugmentationSpec,
                 "loggers": LoggerSpec, "config_sections": ConfigSectionSpec}
R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class PluginInfo:
    """Where a loaded plugin came from and what it provides."""

    name: str
    origin: str  # "builtin", "entry point (dist x.y)", "config (path)"
    module: str
    provides: tuple[str, ...]
    params: dict[str, dict]  # "kind:name" -> JSON Schema of that record's params


def _names_from_env(var: str) -> Optional[set[str]]:
    raw = os.environ.get(var, "").strip()
    return {n.strip() for n in raw.split(",") if n.strip()} if raw else None


class PneumoPluginManager(pluggy.PluginManager):
    """A pluggy manager with pneumo's hookspecs, origins, and a name-checked registry."""

    def __init__(self) -> None:
        super().__init__("pneumo")
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, str] = {}
        self._registry: Optional[dict[str, dict[str, tuple[object, str]]]] = None
        self._only = _names_from_env("PNEUMO_PLUGINS")
        self._disabled = _names_from_env("PNEUMO_DISABLE_PLUGINS") or set()
        if os.environ.get("PNEUMO_TRACE_PLUGINS"):
            self.trace.root.setwriter(lambda msg: sys.stderr.write(f"[pneumo plugins] {msg}"))
            self.enable_tracing()

    def _allowed(self, name: str) -> bool:
        return name not in self._disabled and (self._only is None or name in self._only)

    def add_plugin(self, module: ModuleType, name: str, origin: str) -> None:
        """Register ``module`` as plugin ``name`` unless the environment excludes it."""
        if not self._allowed(name) or self.has_plugin(name):
            return
        self.register(module, name=name)
        self.origins[name] = origin
        self._registry = None

    def load_entry_points(self) -> None:
        """Register every entry point of group ``pneumo``: pneumo's own first, then the rest."""
        eps = list(md.entry_points(group=ENTRY_POINT_GROUP))
        eps.sort(key=lambda ep: (ep.dist is None or ep.dist.name != "pneumo", ep.name))
        for ep in eps:
            if not self._allowed(ep.name) or self.has_plugin(ep.name):
                continue
            dist = ep.dist
            builtin = dist is not None and dist.name == "pneumo"
            origin = "builtin" if builtin else f"entry point ({dist.name} {dist.version})" if dist else "entry point"
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must not hide the others' errors
                raise PluginError(f"plugin '{ep.name}' ({ep.value}) failed to import: {exc}") from exc
            self.add_plugin(module, ep.name, origin)

    def load_config_plugins(self, specs: Iterable[str], base_dir: Optional[Path] = None) -> None:
        """Register plugins listed in a config: dotted module names or paths to ``.py`` files
        (relative paths resolve against ``base_dir``, usually the config file's folder)."""
        for spec in specs:
            if spec.endswith(".py") or "/" in spec or os.sep in spec:
                path = Path(spec)
                if not path.is_absolute():
                    path = (base_dir or Path.cwd()) / path
                if not path.is_file():
                    raise PluginError(f"plugin file '{spec}' not found (looked at {path})")
                name = path.stem
                mod_spec = importlib.util.spec_from_file_location(f"pneumo_config_plugin_{name}", path)
                assert mod_spec is not None and mod_spec.loader is not None
                module = importlib.util.module_from_spec(mod_spec)
                try:
                    mod_spec.loader.exec_module(module)
                except Exception as exc:
                    raise PluginError(f"plugin file '{path}' failed to import: {exc}") from exc
                self.add_plugin(module, name, f"config ({path})")
            else:
                try:
                    module = importlib.import_module(spec)
                except ImportError as exc:
                    raise PluginError(f"plugin module '{spec}' cannot be imported: {exc}. "
                                      "Is it installed, or on PYTHONPATH?") from exc
                if not self.is_registered(module):  # an entry point may have registered it already
                    self.add_plugin(module, spec, f"config ({spec})")

    # -- registry -------------------------------------------------------------------------
    def _build_registry(self) -> dict[str, dict[str, tuple[Record, str]]]:
        registry: dict[str, dict[str, tuple[Record, str]]] = {}
        conflicts = []
        for kind, hook_name in _KINDS.items():
            found: dict[str, tuple[Record, str]] = {}
            for impl in getattr(self.hook, hook_name).get_hookimpls():
                for record in impl.function() or ():
                    if not isinstance(record, _RECORD_TYPES[kind]):
                        raise PluginError(f"plugin '{impl.plugin_name}': {hook_name}() must return "
                                          f"{_RECORD_TYPES[kind].__name__} records, got {type(record).__name__}")
                    if record.name in found:
                        conflicts.append(f"{kind[:-1]} name '{record.name}' is provided by both plugin "
                                         f"'{found[record.name][1]}' and plugin '{impl.plugin_name}'")
                        continue
                    found[record.name] = (record, impl.plugin_name)
            registry[kind] = found
        if conflicts:
            raise PluginError("; ".join(conflicts) + ". Rename one of each pair, or disable one with "
                              "PNEUMO_DISABLE_PLUGINS.")
        return registry

    @property
    def registry(self) -> dict[str, dict[str, tuple[Record, str]]]:
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _get(self, kind: str, name: str, record_type: type[R]) -> R:
        table = self.registry[kind]
        key = normalize_name(name)
        if key not in table:
            known = ", ".join(sorted(table)) or "none"
            raise PluginError(f"unknown {kind[:-1]} '{name}'. Known: {known}. "
                              "Install or list the plugin that provides it (`pneumo plugins`).")
        record = table[key][0]
        assert isinstance(record, record_type)
        return record

    def model(self, name: str) -> ModelSpec:
        """The model record named ``name``; PluginError listing the known ones otherwise."""
        return self._get("models", name, ModelSpec)

    def dataset(self, name: str) -> DatasetSpec:
        """The dataset record named ``name``; PluginError listing the known ones otherwise."""
        return self._get("datasets", name, DatasetSpec)

    def augmentation(self, name: str) -> AugmentationSpec:
        """The augmentation record named ``name``; PluginError listing the known ones otherwise."""
        return self._get("augmentations", name, AugmentationSpec)

    def logger(self, name: str) -> LoggerSpec:
        """The logger record named ``name``; PluginError listing the known ones otherwise."""
        return self._get("loggers", name, LoggerSpec)

    def config_section(self, name: str) -> ConfigSectionSpec:
        """The config section record named ``name``; PluginError listing the known ones otherwise."""
        return self._get("config_sections", name, ConfigSectionSpec)

    def names(self, kind: str) -> list[str]:
        return sorted(self.registry[kind])

    def describe(self) -> list[PluginInfo]:
        """Every loaded plugin with its origin and what it provides, in load order."""
        provided: dict[str, list[str]] = {}
        schemas: dict[str, dict[str, dict]] = {}
        for kind, table in self.registry.items():
            for name, (record, plugin) in table.items():
                provided.setdefault(plugin, []).append(f"{kind[:-1]}:{name}")
                model = getattr(record, "params_model", None) or getattr(record, "model", None)
                if model is not None:
                    schemas.setdefault(plugin, {})[f"{kind[:-1]}:{name}"] = model.model_json_schema()
        out = []
        for name, plugin in self.list_name_plugin():
            hooks = [h.name for h in self.get_hookcallers(plugin) or []
                     if h.name not in _KINDS.values()]
            provides = tuple(sorted(provided.get(name, []))) + tuple(f"hook:{h}" for h in sorted(hooks))
            out.append(PluginInfo(name, self.origins.get(name, "?"), getattr(plugin, "__name__", "?"), provides,
                                  schemas.get(name, {})))
        return out


def registered_plugin_modules() -> set[str]:
    """Modules that installed packages register as ``pneumo`` plugins (entry points): the ones
    that load without asking, as opposed to ``.py`` files and other modules a config or an
    artifact names, whose code runs when they load."""
    return {ep.module for ep in md.entry_points(group="pneumo")}


def get_plugin_manager(config_plugins: Sequence[str] = (), base_dir: Optional[Path] = None) -> PneumoPluginManager:
    """Build a manager with entry-point plugins and the given config-listed plugins."""
    pm = PneumoPluginManager()
    pm.load_entry_points()
    pm.load_config_plugins(config_plugins, base_dir)
    return pm
