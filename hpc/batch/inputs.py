"""What a batch prediction scores: a folder's images or a CSV manifest's rows, frozen into a list
of :class:`InputEntry`, and the deterministic split of that list into shards."""
from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict

from hpc.render import HpcError
from pneumo_core.cli.predict_cmd import expand_inputs


class InputEntry(BaseModel):
    """One image to score: its absolute path, with its size and modification time when it existed
    at planning time (``None`` when it did not: it becomes an error row, not a failed shard)."""

    model_config = ConfigDict(frozen=True)
    path: str
    size: Optional[int] = None
    mtime_ns: Optional[int] = None

    @classmethod
    def of(cls, path: Path) -> "InputEntry":
        """The entry for ``path`` as it is now (made absolute, symlinks kept as named)."""
        absolute = os.path.abspath(path)
        try:
            st = os.stat(absolute)
        except OSError:
            return cls(path=absolute)
        return cls(path=absolute, size=st.st_size, mtime_ns=st.st_mtime_ns)


def list_inputs(source: str | os.PathLike[str], path_column: str = "path") -> list[InputEntry]:
    """The images under a folder (recursive; .jpg, .jpeg, .png, .dcm; sorted, as ``pneumo predict``
    lists them), or the rows of a CSV manifest in file order (``path_column``, relative paths
    taken from the CSV's folder). Raises :class:`HpcError` when there is nothing to score."""
    src = Path(source)
    if src.is_dir():
        paths, errors = expand_inputs([str(src)])
        if not paths:
            raise HpcError(f"{src}: no .jpg, .jpeg, .png or .dcm files in this folder (searched recursively)")
        if errors:  # expand_inputs only reports a folder without images, handled above
            raise HpcError("; ".join(errors))
        return [InputEntry.of(p) for p in paths]
    if src.is_file() and src.suffix.lower() == ".csv":
        return _manifest(src, path_column)
    if src.exists():
        raise HpcError(f"{src}: give a folder of images or a CSV manifest (a .csv file with a '{path_column}' column)")
    raise HpcError(f"{src}: no such folder or CSV manifest")


def _manifest(file: Path, path_column: str) -> list[InputEntry]:
    try:
        with file.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or path_column not in reader.fieldnames:
                columns = ", ".join(reader.fieldnames or []) or "none"
                raise HpcError(f"{file}: no column '{path_column}' (columns: {columns}); name the column of image "
                               "paths with --path-column")
            entries = []
            for line, row in enumerate(reader, start=2):
                value = (row.get(path_column) or "").strip()
                if not value:
                    raise HpcError(f"{file}:{line}: empty '{path_column}'; every row needs an image path")
                entries.append(InputEntry.of(file.parent / value))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise HpcError(f"{file}: cannot read the manifest: {exc}") from None
    if not entries:
        raise HpcError(f"{file}: the manifest has no rows")
    return entries


def shard_bounds(count: int, shards: int, index: int) -> tuple[int, int]:
    """``[start, stop)`` of shard ``index`` of ``shards`` over ``count`` inputs: contiguous blocks
    whose sizes differ by at most one, covering every input exactly once."""
    if shards < 1 or not 0 <= index < shards:
        raise HpcError(f"shard {index} does not exist: shards are numbered 0 to {shards - 1}")
    return index * count // shards, (index + 1) * count // shards


def shard_entries(entries: Sequence[InputEntry], shards: int, index: int) -> Sequence[InputEntry]:
    """The inputs of shard ``index`` of ``shards`` (see :func:`shard_bounds`)."""
    start, stop = shard_bounds(len(entries), shards, index)
    return entries[start:stop]


def entries_digest(entries: Sequence[InputEntry]) -> str:
    """SHA-256 of the entries (path, size, mtime), in order: any change of the list changes it."""
    h = hashlib.sha256()
    for e in entries:
        h.update(json.dumps([e.path, e.size, e.mtime_ns]).encode())
        h.update(b"\n")
    return h.hexdigest()
