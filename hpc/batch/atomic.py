"""Atomic file writes: a reader sees the old file or the whole new one, never a partial one."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def atomic_writer(path: Path) -> Iterator[TextIO]:
    """Write ``path`` through a temporary file beside it, flushed to disk and renamed over
    ``path`` (``os.replace``) when the block ends; if the block raises, ``path`` is untouched
    and the temporary file is removed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """``path.write_text(text)``, atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path) as fh:
        fh.write(text)
