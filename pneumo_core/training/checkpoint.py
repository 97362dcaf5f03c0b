"""Atomic checkpoints, loaded with ``weights_only=True`` (never a full unpickle)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch

from pneumo_core.errors import PneumoError

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``run_dir/checkpoint.pt`` through a temp file, fsync and rename, so a
    kill at any moment leaves either the old or the new checkpoint, never a torn one."""
    path = run_dir / CHECKPOINT
    tmp = path.with_name(f".{CHECKPOINT}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's checkpoint, or None when there is none. A corrupt one is a clear error."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PneumoError(f"{path} is corrupt ({exc}). Delete it to restart the run from scratch, "
                          "or point --run-dir elsewhere.") from exc
