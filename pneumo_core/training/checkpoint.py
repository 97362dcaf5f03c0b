"""Atomic checkpoints, loaded with ``weights_only=True`` (never a full unpickle)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch

from pneumo_core.errors import PneumoError

CHECKPOINT = "checkpoint.pt"
# What resuming reads; a checkpoint without one of these was not written by this trainer.
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "epoch", "batch", "history", "best_auc", "best_epoch",
                 "torch_rng")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_orphans(run_dir: Path) -> list[Path]:
    """Delete temp files that killed writers left (``.checkpoint.pt.<pid>.tmp`` of dead pids)."""
    removed = []
    for tmp in run_dir.glob(f".{CHECKPOINT}.*.tmp"):
        pid = tmp.name[len(CHECKPOINT) + 2:-len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``run_dir/checkpoint.pt`` through a temp file, fsync and rename, so a
    kill at any moment leaves either the old or the new checkpoint, never a torn one. Temp
    files of writers that were killed are removed."""
    remove_orphans(run_dir)
    path = run_dir / CHECKPOINT
    tmp = path.with_name(f".{CHECKPOINT}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's checkpoint, or None when there is none. A corrupt or incomplete one is a clear error."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PneumoError(f"{path} is corrupt ({exc}). Delete it to restart the run from scratch, "
                          "or point --run-dir elsewhere.") from exc
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise PneumoError(f"{path} is not a complete pneumo checkpoint (missing {', '.join(missing)}). Delete it to "
                          "restart the run from scratch, or point --run-dir elsewhere.")
    return state
