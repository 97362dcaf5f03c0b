"""Hook specifications of pneumo (pluggy project name ``pneumo``).

Each docstring is the contract: when the hook is called, with what, and what it returns.
``docs/plugins.md`` documents every hook; a test keeps the two in sync.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from pneumo_core.records import (AugmentationSpec, ConfigSectionSpec, DatasetSpec, HealthCheck, LoggerSpec, ModelSpec,
                                 RunInfo)

if TYPE_CHECKING:  # the inference package imports this module's manager: annotations only
    from pneumo_core.inference import Predictor, PredictRequest, PredictResponse

hookspec = pluggy.HookspecMarker("pneumo")


@hookspec
def pneumo_models() -> list[ModelSpec]:
    """Return a list of :class:`~pneumo_core.records.ModelSpec` this plugin provides.

    Called once when the plugin manager builds its registry. Names must be unique across
    all plugins.
    """


@hookspec
def pneumo_datasets() -> list[DatasetSpec]:
    """Return a list of :class:`~pneumo_core.records.DatasetSpec` this plugin provides.

    Called once when the registry is built. Dataset plugins must give every sample a patient
    (group) id so that splits never leak a patient.
    """


@hookspec
def pneumo_augmentations() -> list[AugmentationSpec]:
    """Return a list of :class:`~pneumo_core.records.AugmentationSpec` this plugin provides.

    Called once when the registry is built.
    """


@hookspec
def pneumo_loggers() -> list[LoggerSpec]:
    """Return a list of :class:`~pneumo_core.records.LoggerSpec` (experiment trackers) this
    plugin provides.

    Called once when the registry is built. A config turns one on by naming it in its
    ``loggers`` list; the trainer builds it on rank 0 only.
    """


@hookspec
def pneumo_config_sections() -> list[ConfigSectionSpec]:
    """Return a list of :class:`~pneumo_core.records.ConfigSectionSpec`: top-level config sections
    this plugin owns (pneumo's ``hpc`` package registers ``hpc``).

    Called once when the registry is built. A config's section of that name is validated by the
    record's model; a section no plugin registers is an error naming the known ones.
    """


@hookspec
def pneumo_predictor_loaded(predictor: Predictor) -> None:
    """Called once after a :class:`~pneumo_core.inference.Predictor` has loaded and warmed up
    its model, in every adapter (REST worker, RunPod worker, CLI). Return value ignored."""


@hookspec
def pneumo_before_predict(request: PredictRequest) -> None:
    """Called with the :class:`~pneumo_core.inference.PredictRequest` before inference.

    Raise :class:`~pneumo_core.inference.PredictionRejected` to refuse the request; adapters
    turn it into a client error carrying its message. Return value ignored.
    """


@hookspec
def pneumo_after_predict(request: PredictRequest, result: PredictResponse) -> None:
    """Called with the request and the :class:`~pneumo_core.inference.PredictResponse` after
    inference, before the adapter returns it (for audit logs, metrics). Return value ignored."""


@hookspec
def pneumo_health_checks() -> list[HealthCheck]:
    """Return a list of :class:`~pneumo_core.records.HealthCheck`; readiness endpoints run them
    and report not-ready when any returns ``ok=False``."""


@hookspec
def pneumo_train_start(run: RunInfo) -> None:
    """Called on every rank when training starts (after a resume, too), with a
    :class:`~pneumo_core.records.RunInfo`. Return value ignored."""


@hookspec
def pneumo_epoch_end(run: RunInfo, metrics: dict[str, Any]) -> None:
    """Called on rank 0 after each epoch's validation with the run and a dict of metrics
    (``epoch``, ``train_loss``, ``val_loss``, ``val_auc``, ``temporal_loss`` and ``temporal_auc``
    when there is a temporal split, ``lr``, ``images_per_s``...)."""


@hookspec
def pneumo_train_end(run: RunInfo, artifact: Path) -> None:
    """Called on rank 0 after the model artifact was written, with the run and the artifact's
    folder (a ``pathlib.Path``). Return value ignored."""
