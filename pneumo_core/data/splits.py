"""Patient-grouped, label-stratified train/validation splits."""
from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from pneumo_core.errors import PneumoError
from pneumo_core.records import Sample, SampleTable


def grouped_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out about ``val_fraction`` of the patients, stratified by label, deterministic by seed.

    No group (patient) ends up on both sides.
    """
    n_splits = max(2, round(1 / val_fraction))
    groups = [s.group for s in samples]
    if len(set(groups)) < n_splits:
        raise PneumoError(f"only {len(set(groups))} patients: too few for a {val_fraction:.0%} validation split")
    labels = np.array([s.label for s in samples])
    folder = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folder.split(np.zeros(len(samples)), labels, groups))
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]


def assign_splits(table: SampleTable, val_fraction: float, min_val_images: int,
                  seed: int) -> dict[str, list[Sample]]:
    """Split a table into train / val / test.

    A dataset's own val split is kept when it has at least ``min_val_images`` images; otherwise
    it is pooled with train (or unsplit data) and a patient-grouped split is drawn.
    """
    by_split: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    unsplit = []
    for s in table.samples:
        (by_split[s.split] if s.split else unsplit).append(s)
    if len(by_split["val"]) < min_val_images:
        pool = by_split["train"] + by_split["val"] + unsplit
        by_split["train"], by_split["val"] = grouped_split(pool, val_fraction, seed)
    else:  # unsplit images of a validation patient go to validation, so no patient is on both sides
        val_groups = {s.group for s in by_split["val"]}
        for s in unsplit:
            by_split["val" if s.group in val_groups else "train"].append(s)
    for name in ("train", "val"):
        counts = Counter(s.label for s in by_split[name])
        if len(counts) < 2:
            raise PneumoError(f"the {name} split has only one class ({dict(counts)}); add data of every class")
    return by_split
