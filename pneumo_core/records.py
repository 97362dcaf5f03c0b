"""Typed records that plugins return from their hooks, and the callables they carry.

Every record has a ``name``, normalised (stripped, lower case) and checked when the record is
made; the plugin manager refuses two plugins claiming one name for one kind of record.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

Split = Literal["train", "val", "test"]
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")


def normalize_name(name: str) -> str:
    """The canonical form of a record name: stripped and lower case."""
    return name.strip().lower()


@dataclass(frozen=True)
class Record:
    """Base of every plugin record: a ``name`` of letters, digits and ``_ . + -``."""

    name: str

    def __post_init__(self) -> None:
        name = normalize_name(self.name) if isinstance(self.name, str) else self.name
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{type(self).__name__} name {self.name!r} must be letters, digits and _ . + - "
                             "(starting with a letter or digit)")
        object.__setattr__(self, "name", name)


class ModelBuilder(Protocol):
    """``build(params, in_chans, num_classes, load_pretrained)`` of a :class:`ModelSpec`.

    ``load_pretrained`` is True when training starts (honour the params' pretrained weights) and
    False when an artifact is rebuilt (its own weights are loaded next: download nothing).
    """

    def __call__(self, params: Any, in_chans: int, num_classes: int, load_pretrained: bool) -> Any: ...


class DatasetBuilder(Protocol):
    def __call__(self, params: Any) -> SampleTable: ...


class Augment(Protocol):
    """What an augmentation's ``build`` returns: HxW uint8 image in, same size out."""

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Reseedable(Protocol):
    """An :class:`Augment` that can be reseeded (per worker and epoch, for reproducible runs)."""

    def set_random_seed(self, seed: int) -> None: ...


class AugmentationBuilder(Protocol):
    def __call__(self, params: Any, image_size: int, train: bool) -> Augment: ...


class NoParams(BaseModel):
    """Params schema for plugins that take no parameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ModelSpec(Record):
    """A model architecture.

    ``build(params, in_chans, num_classes, load_pretrained)`` returns an ``nn.Module`` mapping
    ``(N, in_chans, H, W)`` float tensors to ``(N, num_classes)`` logits (see :class:`ModelBuilder`).
    ``cam_layer(module)`` returns the layer Grad-CAM should hook (usually the last conv block).
    """

    build: ModelBuilder
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
class DatasetSpec(Record):
    """A data source. ``build(params) -> SampleTable``; decoding happens lazily in ``Sample.load``."""

    build: DatasetBuilder
    params_model: type[BaseModel] = NoParams
    description: str = ""


@dataclass(frozen=True)
class AugmentationSpec(Record):
    """Train-time augmentation. ``build(params, image_size, train)`` returns an :class:`Augment`
    mapping an HxW uint8 image (already resized to ``image_size``) to one of the same size,
    :class:`Reseedable` when it is random. With ``train=False`` it must return the identity:
    evaluation and serving never augment."""

    build: AugmentationBuilder
    params_model: type[BaseModel] = NoParams
    description: str = ""


class RunLogger(Protocol):
    """What a logger's ``build`` returns; the trainer calls it on rank 0 only.

    ``start(params, resumed)`` once per process, with the experiment config flattened to
    ``{"train.lr": 0.002, ...}``; ``resumed`` is True when the run continues from a checkpoint
    and must continue the same tracked run. ``log_metrics(metrics, step)`` after each epoch
    (``step`` is the 1-based epoch; a step may come again after a resume: keep one value per step).
    ``log_artifact(folder, metrics)`` once, with the written model artifact and its final metrics.
    ``close(status)`` always, last: ``"finished"``, ``"interrupted"`` (will resume) or ``"failed"``.
    """

    def start(self, params: dict[str, Any], resumed: bool) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, folder: Any, metrics: dict[str, float]) -> None: ...

    def close(self, status: Literal["finished", "interrupted", "failed"]) -> None: ...


class LoggerBuilder(Protocol):
    def __call__(self, params: Any, run: RunInfo) -> RunLogger: ...


@dataclass(frozen=True)
class LoggerSpec(Record):
    """An experiment tracker (CSV, TensorBoard, MLflow...), chosen in the config's ``loggers``
    list. ``build(params, run) -> RunLogger`` is called on rank 0 when training starts."""

    build: LoggerBuilder
    params_model: type[BaseModel] = NoParams
    description: str = ""


@dataclass(frozen=True)
class ConfigSectionSpec(Record):
    """A top-level config section owned by a package other than the core (``hpc``...): ``model``,
    a pydantic model, validates it; a config without the section gets the model's defaults."""

    model: type[BaseModel]
    description: str = ""


@dataclass(frozen=True)
class HealthCheck(Record):
    """A named readiness check contributed by a plugin; ``check()`` returns (ok, detail)."""

    check: Callable[[], tuple[bool, str]]


@dataclass
class RunInfo:
    """What training hooks receive about the current run."""

    run_dir: Any
    config: Any
    rank: int = 0
    world_size: int = 1
    history: list = field(default_factory=list)
