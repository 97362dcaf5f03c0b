"""Fixtures for the RunPod worker tests: one Predictor, a local image server, subprocess env."""
from __future__ import annotations

import base64
import os

import pytest

from harness import REPO


@pytest.fixture(scope="session")
def rp_predictor(smoke_artifact):
    """One Predictor over the smoke artifact for every in-process handler test."""
    from pneumo_core.inference import Predictor

    return Predictor(smoke_artifact)


@pytest.fixture()
def rp_settings(smoke_artifact):
    """Settings as the worker reads them, with no environment overrides."""
    from adapters.runpod.settings import RunpodSettings

    return RunpodSettings.from_env({"PNEUMO_ARTIFACT": str(smoke_artifact)})


@pytest.fixture(scope="session")
def phantom_b64(phantom_png) -> str:
    return base64.b64encode(phantom_png).decode()


@pytest.fixture(scope="session")
def worker_env(smoke_artifact) -> dict:
    """Environment for worker subprocesses: the smoke artifact, quiet SDK logs, no RunPod vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "PNEUMO_"))}
    env.update(PNEUMO_ARTIFACT=str(smoke_artifact), RUNPOD_LOG_LEVEL="INFO", NO_ALBUMENTATIONS_UPDATE="1",
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    return env
