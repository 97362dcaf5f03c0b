"""Decode and resize every image once, in parallel, into one uint8 array."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from pneumo_core.data.preprocess import resize_square
from pneumo_core.records import Sample


def decode_all(samples: Sequence[Sample], size: int, desc: str = "decode", progress: bool = True) -> np.ndarray:
    """Return an (N, size, size) uint8 array of the samples' images, decoded by a thread pool
    (Pillow and OpenCV release the GIL while decoding and resizing)."""
    out = np.empty((len(samples), size, size), dtype=np.uint8)

    def work(i: int) -> None:
        out[i] = resize_square(samples[i].load(), size)

    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        for _ in tqdm(pool.map(work, range(len(samples))), total=len(samples), desc=desc,
                      disable=not progress, leave=False, unit="img"):
            pass
    return out


def fingerprint(splits: dict[str, Sequence[Sample]], classes: Sequence[str]) -> str:
    """A sha256 over classes and each split's (key, label, group): identifies the training data."""
    h = hashlib.sha256(repr(tuple(classes)).encode())
    for name in sorted(splits):
        for s in splits[name]:
            h.update(f"{name}\t{s.key}\t{s.label}\t{s.group}\n".encode())
    return h.hexdigest()
