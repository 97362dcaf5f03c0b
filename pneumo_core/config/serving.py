"""The serving contract both adapters (REST and RunPod) read: one set of environment variables
over the config's ``serve`` section, and the image limits that follow from it.

Environment (each overrides the ``serve`` key named after it):

=======================  ==================  ===============================================
variable                 ``serve`` key       meaning
=======================  ==================  ===============================================
PNEUMO_BACKEND           backend             auto (default), torch, onnx, openvino, onnx-int8
PNEUMO_PRECISION         precision           auto, fp32 or bf16 (torch backend)
PNEUMO_OOD_POLICY        ood_policy          flag (default) or reject out-of-distribution images
PNEUMO_MAX_IMAGE_MB      max_upload_mb       largest image file (uploaded, base64 or fetched)
PNEUMO_MAX_REQUEST_MB    max_request_mb      largest REST request body, all files together
PNEUMO_MAX_PIXELS        max_pixels          largest width x height of one image
PNEUMO_MAX_IMAGES        max_batch           most images in one request or job
=======================  ==================  ===============================================

``PNEUMO_MAX_UPLOAD_MB``, the REST adapter's old name for ``PNEUMO_MAX_IMAGE_MB``, is still read.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

from pydantic import ValidationError

from pneumo_core.config.schema import ServeSection
from pneumo_core.errors import ConfigError
from pneumo_core.imaging import ImageLimits

ENV_KEYS: dict[str, tuple[str, Callable[[str], object]]] = {
    "PNEUMO_BACKEND": ("backend", str),
    "PNEUMO_PRECISION": ("precision", str),
    "PNEUMO_OOD_POLICY": ("ood_policy", str),
    "PNEUMO_MAX_UPLOAD_MB": ("max_upload_mb", float),  # old name, read first so the new one wins
    "PNEUMO_MAX_IMAGE_MB": ("max_upload_mb", float),
    "PNEUMO_MAX_REQUEST_MB": ("max_request_mb", float),
    "PNEUMO_MAX_PIXELS": ("max_pixels", int),
    "PNEUMO_MAX_IMAGES": ("max_batch", int),
}


def serve_from_env(environ: Mapping[str, str], base: Optional[ServeSection] = None) -> ServeSection:
    """``base`` (default: the defaults) with the variables above applied; a bad value is a
    ConfigError naming the variable and what it must be."""
    serve = base or ServeSection()
    updates: dict[str, object] = {}
    for var, (key, kind) in ENV_KEYS.items():
        raw = environ.get(var, "").strip()
        if not raw:
            continue
        try:
            updates[key] = kind(raw)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"{var} must be {what}, not {raw!r}") from None
        try:
            ServeSection.model_validate({**serve.model_dump(), key: updates[key]})
        except ValidationError as exc:
            raise ConfigError(f"{var}={raw!r}: {exc.errors()[0]['msg']}") from None
    return ServeSection.model_validate({**serve.model_dump(), **updates}) if updates else serve


def image_limits(serve: ServeSection) -> ImageLimits:
    """The decoder's limits for one image under these settings."""
    return ImageLimits(max_bytes=int(serve.max_upload_mb * 1024 * 1024), max_pixels=serve.max_pixels)
