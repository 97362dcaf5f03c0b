"""Shared fixtures: a small trained artifact, generated images, and the offline environment."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# On-demand ONNX exports (--backend auto) go to one folder per test session, not ~/.cache.
os.environ.setdefault("PNEUMO_CACHE_DIR", tempfile.mkdtemp(prefix="pneumo-test-cache-"))

from harness import REPO


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def smoke_artifact(tmp_path_factory) -> Path:
    """A model artifact trained once per session from configs/smoke.yaml (1 epoch, small data)."""
    from pneumo_core.config import load_config
    from pneumo_core.training import train

    run_dir = tmp_path_factory.mktemp("smoke-run")
    rc = load_config(REPO / "configs" / "smoke.yaml",
                     ["train.epochs=1", "train.bootstrap=50", "data.params.n_train=64",
                      "data.params.n_val=32", "data.params.n_test=32"])
    return train(rc, run_dir, resume=False, progress=False)


@pytest.fixture(scope="session")
def phantom_png() -> bytes:
    """A synthetic pneumonia phantom (128 px) encoded as PNG."""
    from PIL import Image

    from plugins.datasets.synthetic.phantom import render_phantom

    buf = io.BytesIO()
    Image.fromarray(render_phantom(1, 128, 7)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def image_server(phantom_png):
    """A local http.server on 127.0.0.1 serving the phantom PNG (routes in tests/image_server.py);
    yields its base URL and the list of requested paths."""
    from image_server import serve_images

    with serve_images(phantom_png) as served:
        yield served
