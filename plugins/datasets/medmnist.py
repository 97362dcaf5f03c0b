"""Dataset plugin ``medmnist``: a MedMNIST ``.npz`` (e.g. pneumoniamnist.npz) with official splits.

MedMNIST carries no patient ids, so each image is its own group; its official splits are used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pneumo_core import DatasetSpec, PluginError, Sample, SampleTable, hookimpl


class MedMnistParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path = Field(description="Path to the .npz, e.g. pneumoniamnist_224.npz; relative to the config "
                       "file's folder.")
    classes: list[str] = Field(["NORMAL", "PNEUMONIA"], min_length=2)


def _take(images: np.ndarray, i: int) -> np.ndarray:
    img = images[i]
    if img.ndim == 3:  # colour MedMNIST sets: average channels to grayscale
        img = img.mean(axis=-1).astype(np.uint8)
    return np.ascontiguousarray(img)


def build(params: MedMnistParams) -> SampleTable:
    file = Path(params.path).expanduser()
    if not file.is_file():
        raise PluginError(f"medmnist: {file} not found (data.params.path)")
    try:
        npz = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PluginError(f"medmnist: {file} is not a readable .npz: {exc}") from exc
    samples = []
    for split in ("train", "val", "test"):
        if f"{split}_images" not in npz:
            continue
        images = npz[f"{split}_images"]
        labels = npz[f"{split}_labels"].reshape(-1).astype(int)
        if images.dtype != np.uint8 or len(images) != len(labels):
            raise PluginError(f"medmnist: {file}: {split}_images must be uint8 and match {split}_labels")
        if labels.size and (labels.min() < 0 or labels.max() >= len(params.classes)):
            raise PluginError(f"medmnist: {file}: labels outside 0..{len(params.classes) - 1}")
        for i, label in enumerate(labels):
            samples.append(Sample(key=f"{split}/{i}", label=int(label), group=f"{split}-{i}",
                                  load=lambda images=images, i=i: _take(images, i), split=split))
    if not samples:
        raise PluginError(f"medmnist: {file} has no train_images/val_images/test_images arrays")
    return SampleTable(classes=tuple(params.classes), samples=tuple(samples), description=f"MedMNIST {file.name}")


@hookimpl
def pneumo_datasets():
    return [DatasetSpec(name="medmnist", build=build, params_model=MedMnistParams,
                        description="MedMNIST .npz with official train/val/test splits")]
