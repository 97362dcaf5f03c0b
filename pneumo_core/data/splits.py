"""Patient-grouped, label-stratified validation splits: random (``val``) and ``temporal``."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from pneumo_core.errors import PneumoError
from pneumo_core.records import Sample, SampleTable

if TYPE_CHECKING:
    from pneumo_core.config.schema import ExperimentConfig


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


def temporal_split(samples: list[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """Hold out the earliest ``fraction`` of the patients of each (series, label), by ``Sample.order``.

    Returns ``(rest, held_out)``. Patients stay whole; a patient's position is its earliest image's.
    Samples without an order stay in ``rest``.
    """
    first: dict[str, tuple[str, float]] = {}
    label_of: dict[str, int] = {}
    for s in samples:
        if s.order is not None:
            label_of.setdefault(s.group, s.label)
            if s.group not in first or s.order[1] < first[s.group][1]:
                first[s.group] = (s.order[0], s.order[1])
    if not first:
        raise PneumoError("data.temporal_fraction is set, but the dataset gives no acquisition order for any "
                          "image (imagefolder reads it from Kermany file names; csv from its series/order "
                          "columns); set temporal_fraction: 0 or add the order")
    buckets: dict[tuple[str, int], list[str]] = defaultdict(list)
    for group, (series, _) in first.items():
        buckets[(series, label_of[group])].append(group)
    held: set[str] = set()
    for groups in buckets.values():
        groups.sort(key=lambda g: (first[g][1], g))
        held.update(groups[:round(fraction * len(groups))])
    return [s for s in samples if s.group not in held], [s for s in samples if s.group in held]


def assign_splits(table: SampleTable, val_fraction: float, min_val_images: int, seed: int,
                  temporal_fraction: float = 0.0) -> dict[str, list[Sample]]:
    """Split a table into ``train`` / ``val`` / ``temporal`` / ``test`` (``temporal`` empty when its
    fraction is 0).

    The temporal split is drawn first, from train (and unsplit) patients, earliest first; it
    stands in for data acquired at another time. A dataset's own val split is kept when it has at
    least ``min_val_images`` images; otherwise it is pooled with the rest of train and a random
    patient-grouped split of ``val_fraction`` is drawn. No patient is in two splits.
    """
    by_split: dict[str, list[Sample]] = {"train": [], "val": [], "temporal": [], "test": []}
    unsplit = []
    for s in table.samples:
        (by_split[s.split] if s.split else unsplit).append(s)
    if temporal_fraction > 0:
        rest, by_split["temporal"] = temporal_split(by_split["train"] + unsplit, temporal_fraction)
        taken = {s.group for s in by_split["temporal"]}
        if taken & {s.group for s in by_split["val"]}:
            by_split["val"] = [s for s in by_split["val"] if s.group not in taken]
        by_split["train"], unsplit = [s for s in rest if s.split], [s for s in rest if not s.split]
    if len(by_split["val"]) < min_val_images:
        pool = by_split["train"] + by_split["val"] + unsplit
        by_split["train"], by_split["val"] = grouped_split(pool, val_fraction, seed)
    else:  # unsplit images of a validation patient go to validation, so no patient is on both sides
        val_groups = {s.group for s in by_split["val"]}
        for s in unsplit:
            by_split["val" if s.group in val_groups else "train"].append(s)
    for name in ("train", "val", "temporal"):
        counts = Counter(s.label for s in by_split[name])
        if (name != "temporal" or temporal_fraction > 0) and len(counts) < 2:
            raise PneumoError(f"the {name} split has only one class ({dict(counts)}); add data of every class")
    return by_split


def config_splits(table: SampleTable, config: ExperimentConfig) -> dict[str, list[Sample]]:
    """:func:`assign_splits` as a config draws it: training, evaluation and ensembles share this."""
    data = config.data
    seed = config.train.seed if data.split_seed is None else data.split_seed
    return assign_splits(table, data.val_fraction, data.min_val_images, seed, data.temporal_fraction)
