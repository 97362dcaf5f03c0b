"""Typed records that plugins return from their hooks.

Every record has a unique ``name``; the plugin manager refuses two plugins claiming the
same name for the same kind of record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict

Split = Literal["train", "val", "test"]


class NoParams(BaseModel):
    """Params schema for plugins that take no parameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ModelSpec:
    """A model architecture.

    ``build(params, in_chans, num_classes)`` returns an ``nn.Module`` mapping
    ``(N, in_chans, H, W)`` float tensors to ``(N, num_classes)`` logits.
    ``cam_layer(module)`` returns the layer Grad-CAM should hook (usually the last conv block).
    """

    name: str
    build: Callable[[Any, int, int], Any]
    cam_layer: Callable[[Any], Any]
    params_model: type[BaseModel] = NoParams
    description: str = ""


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``load()`` returns an HxW uint8 grayscale array.

    ``group`` is the patient (or other leakage unit): splits never put one group on both sides.
    ``split`` is set when the source defines it (e.g. an official test split), else ``None``.
    ``order`` is ``(series, position)`` when the source knows the acquisition order (Kermany
    patient numbers within a file-name series); the ``temporal`` validation split holds out the
    lowest positions of each series. ``None``: the sample never goes to the temporal split.
    """

    key: str
    label: int
    group: str
    load: Callable[[], np.ndarray]
    split: Optional[Split] = None
    order: Optional[tuple[str, float]] = None


@dataclass(frozen=True)
class SampleTable:
    """What a dataset plugin builds: class names (index = label) and the samples."""

    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    description: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A data source. ``build(params) -> SampleTable``; decoding happens lazily in ``Sample.load``."""

    name: str
    build: Callable[[Any], SampleTable]
    params_model: type[BaseModel] = NoParams
    description: str = ""


@dataclass(frozen=True)
class AugmentationSpec:
    """Train-time augmentation. ``build(params, image_size, train)`` returns a callable mapping an
    HxW uint8 image (already resized to ``image_size``) to an HxW uint8 image of the same size.
    With ``train=False`` it must return the identity: evaluation and serving never augment."""

    name: str
    build: Callable[[Any, int, bool], Callable[[np.ndarray], np.ndarray]]
    params_model: type[BaseModel] = NoParams
    description: str = ""


@dataclass(frozen=True)
class HealthCheck:
    """A named readiness check contributed by a plugin; ``check()`` returns (ok, detail)."""

    name: str
    check: Callable[[], tuple[bool, str]]


@dataclass
class RunInfo:
    """What training hooks receive about the current run."""

    run_dir: Any
    config: Any
    rank: int = 0
    world_size: int = 1
    history: list = field(default_factory=list)
