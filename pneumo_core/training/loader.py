"""Batches from the decoded-image cache, with deterministic, resumable, rank-aware ordering."""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pneumo_core.data.preprocess import Preprocessing, to_input
from pneumo_core.errors import PneumoError
from pneumo_core.records import Augment, Reseedable


class CachedImages(Dataset):
    """Items are (input tensor, label). ``augment`` is reseeded per (seed, epoch, index)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, prep: Preprocessing,
                 augment: Optional[Augment] = None, seed: int = 0) -> None:
        self.images, self.labels, self.prep, self.augment, self.seed = images, labels, prep, augment, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.augment is not None:
            if isinstance(self.augment, Reseedable):
                self.augment.set_random_seed((self.seed * 1_000_003 + self.epoch * 100_003 + i) % 2**31)
            image = self.augment(image)
        return torch.from_numpy(to_input(image, self.prep)), int(self.labels[i])


class EpochBatchSampler(Sampler[list[int]]):
    """Yields this rank's share of each global batch.

    The permutation depends only on (seed, epoch), and each global batch of ``batch_size`` is cut
    into contiguous per-rank slices, so N ranks see exactly the batches one process would.
    ``start_batch`` skips batches already trained before an interruption.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise PneumoError(f"train.batch_size {batch_size} must be divisible by the {world_size} processes")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world_size
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        return max(self.n // self.batch_size - self.start_batch, 0)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        per_rank = self.batch_size // self.world
        for b in range(self.start_batch, self.n // self.batch_size):
            start = b * self.batch_size + self.rank * per_rank
            yield order[start:start + per_rank]


def make_loader(data: CachedImages, sampler: EpochBatchSampler, workers: int) -> DataLoader:
    # not persistent: workers are re-created each epoch so they see the dataset's new epoch (seeding)
    return DataLoader(data, batch_sampler=sampler, num_workers=workers)


def iterate_eval(images: np.ndarray, prep: Preprocessing, batch_size: int) -> Iterator[torch.Tensor]:
    """Unaugmented input batches in order, for validation and evaluation."""
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        yield torch.from_numpy(np.stack([to_input(im, prep) for im in chunk]))
