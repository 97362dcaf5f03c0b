"""File paths in plugin params: ``pathlib.Path`` fields resolve against the config file's folder.

A plugin marks a parameter as a path by typing it ``Path`` (or ``Optional[Path]``); a relative
value then means the same file wherever the command runs from (a Slurm job's working folder, a
notebook, the repository root), as ``plugins:`` entries already do. A value given on the command
line (``--set data.params.root=...``) is relative to the working folder, as shells expect. ``~`` expands.
"""
from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Collection, Optional, Union, get_args, get_origin

from pydantic import BaseModel


def _is_path(annotation: object) -> bool:
    if annotation is Path:
        return True
    if get_origin(annotation) in (Union, types.UnionType):  # Optional[Path], Path | None
        return any(a is Path for a in get_args(annotation))
    return False


def path_fields(params: BaseModel) -> dict[str, Path]:
    """The params' ``Path`` fields that hold a value, by field name."""
    return {name: getattr(params, name) for name, field in type(params).model_fields.items()
            if _is_path(field.annotation) and isinstance(getattr(params, name), Path)}


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _set_on_command_line(key: str, from_cwd: Collection[str]) -> bool:
    """``key`` ("data.params.root") or an object above it ("data.params") was given with --set."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in from_cwd for i in range(1, len(parts) + 1))


def resolve_paths(params: BaseModel, base_dir: Optional[Path], where: str = "",
                  from_cwd: Collection[str] = ()) -> BaseModel:
    """A copy of ``params`` (found at ``where`` in the config, e.g. ``"data.params"``) whose relative
    ``Path`` fields are joined to ``base_dir`` (``~`` expanded), or to the working folder when
    ``from_cwd`` (the keys set on the command line) holds the field's key or an object above it."""
    updates = {}
    for name, value in path_fields(params).items():
        value = value.expanduser()
        base = Path.cwd() if _set_on_command_line(_key(where, name), from_cwd) else base_dir
        if not value.is_absolute() and base is not None:
            value = Path(os.path.normpath(base / value))  # "configs/../data" -> "data"; links kept
        updates[name] = value
    return params.model_copy(update=updates) if updates else params


def missing_paths(where: str, params: BaseModel) -> list[str]:
    """``"data.params.root: /x does not exist"`` for each path field naming nothing on disk."""
    return [f"{_key(where, name)}: {value} does not exist" for name, value in path_fields(params).items()
            if not value.exists()]
