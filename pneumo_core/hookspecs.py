"""Hook specifications of pneumo (pluggy project name ``pneumo``).

Each docstring is the contract: when the hook is called, with what, and what it returns.
``docs/plugins.md`` documents every hook; a test keeps the two in sync.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("pneumo")


@hookspec
def pneumo_models():
    """Return a list of :class:`~pneumo_core.records.ModelSpec` this plugin provides.

    Called once when the plugin manager builds its registry. Names must be unique across
    all plugins.
    """


@hookspec
def pneumo_datasets():
    """Return a list of :class:`~pneumo_core.records.DatasetSpec` this plugin provides.

    Called once when the registry is built. Dataset plugins must give every sample a patient
    (group) id so that splits never leak a patient.
    """


@hookspec
def pneumo_augmentations():
    """Return a list of :class:`~pneumo_core.records.AugmentationSpec` this plugin provides.

    Called once when the registry is built.
    """


@hookspec
def pneumo_predictor_loaded(predictor):
    """Called once after a :class:`~pneumo_core.inference.Predictor` has loaded and warmed up
    its model, in every adapter (REST worker, RunPod worker, CLI). Return value ignored."""


@hookspec
def pneumo_before_predict(request):
    """Called with the :class:`~pneumo_core.inference.PredictRequest` before inference.

    Raise :class:`~pneumo_core.inference.PredictionRejected` to refuse the request; adapters
    turn it into a client error carrying its message. Return value ignored.
    """


@hookspec
def pneumo_after_predict(request, result):
    """Called with the request and the :class:`~pneumo_core.inference.PredictResponse` after
    inference, before the adapter returns it (for audit logs, metrics). Return value ignored."""


@hookspec
def pneumo_health_checks():
    """Return a list of :class:`~pneumo_core.records.HealthCheck`; readiness endpoints run them
    and report not-ready when any returns ``ok=False``."""


@hookspec
def pneumo_train_start(run):
    """Called on every rank when training starts (after a resume, too), with a
    :class:`~pneumo_core.records.RunInfo`. Return value ignored."""


@hookspec
def pneumo_epoch_end(run, metrics):
    """Called on rank 0 after each epoch's validation with the run and a dict of metrics
    (``epoch``, ``train_loss``, ``val_loss``, ``val_auc``, ``lr``, ``images_per_s``...)."""


@hookspec
def pneumo_train_end(run, artifact):
    """Called on rank 0 after the model artifact was written, with the run and the artifact's
    folder (a ``pathlib.Path``). Return value ignored."""
