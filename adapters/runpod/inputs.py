"""A RunPod job's ``input``: validated by pydantic, then turned into the core's ``InputImage`` list.

One image::

    {"image": "<base64 JPEG/PNG/DICOM>", "name": "chest.png", "heatmap": false}
    {"image_url": "https://example.org/chest.png"}

A batch (each item has ``image`` or ``image_url``, and an optional ``name``)::

    {"images": [{"image": "<base64>", "name": "a.png"}, {"image_url": "https://..."}], "heatmap": true}
"""
from __future__ import annotations

import base64
import binascii
import posixpath
from typing import Any, Callable, Optional
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapters.runpod.fetch import FetchPolicy, fetch_url
from pneumo_core.inference import InputImage

Fetcher = Callable[[str, FetchPolicy], bytes]


class InputError(ValueError):
    """The job input is malformed; ``str(e)`` says what is wrong and what to send instead."""

    def __init__(self, message: str, code: str = "invalid_input") -> None:
        super().__init__(message)
        self.code = code


class ImageItem(BaseModel):
    """One image in ``images``: exactly one of ``image`` (base64) or ``image_url``."""

    model_config = ConfigDict(extra="forbid")
    image: Optional[str] = Field(None, description="The file (JPEG, PNG or DICOM), base64-encoded; "
                                 "a data: URI prefix is accepted.")
    image_url: Optional[str] = Field(None, description="An http(s) URL of the file.")
    name: Optional[str] = Field(None, min_length=1, max_length=255, description="Label used in results and errors.")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.image is None) == (self.image_url is None):
            raise ValueError("give exactly one of 'image' (base64) or 'image_url'")
        return self


class JobInput(BaseModel):
    """The whole ``input`` object: exactly one of ``image``, ``image_url`` or ``images``."""

    model_config = ConfigDict(extra="forbid")
    image: Optional[str] = Field(None, description="One image, base64-encoded.")
    image_url: Optional[str] = Field(None, description="One image by http(s) URL.")
    images: Optional[list[ImageItem]] = Field(None, min_length=1, description="A batch of images.")
    name: Optional[str] = Field(None, min_length=1, max_length=255, description="Label for a single image.")
    heatmap: bool = Field(False, description="Also return a Grad-CAM overlay (base64 PNG) per image.")
    site: Optional[str] = Field(None, min_length=1, max_length=64, description="Use this site's operating point.")

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("image", "image_url", "images") if getattr(self, k) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(f"'{k}'" for k in given)
            raise ValueError(f"give exactly one of 'image' (base64), 'image_url' or 'images' (a list), not {what}")
        if self.images is not None and self.name is not None:
            raise ValueError("'name' labels a single image; in a batch put 'name' inside each item of 'images'")
        return self

    def items(self) -> list[ImageItem]:
        if self.images is not None:
            return list(self.images)
        return [ImageItem(image=self.image, image_url=self.image_url, name=self.name)]


def parse_job_input(raw: Any, max_images: int) -> JobInput:
    """Validate a job's ``input``; raises :class:`InputError` with every problem found."""
    if not isinstance(raw, dict):
        raise InputError(f"input must be a JSON object with one of 'image', 'image_url' or 'images', "
                         f"not {type(raw).__name__}")
    try:
        job = JobInput.model_validate(raw)
    except ValidationError as exc:
        raise InputError("; ".join(_describe(err) for err in exc.errors())) from None
    if job.images is not None and len(job.images) > max_images:
        raise InputError(f"too many images: {len(job.images)}, send at most {max_images} per job "
                         "(split the batch into several jobs)")
    return job


def load_images(job: JobInput, max_bytes: int, policy: FetchPolicy, fetcher: Fetcher = fetch_url) -> list[InputImage]:
    """Decode each base64 ``image`` and download each ``image_url`` (through the URL guard)."""
    batch = job.images is not None
    images = []
    for i, item in enumerate(job.items()):
        where = f"images[{i}]" if batch else "input"
        if item.image is not None:
            name = item.name or (f"image-{i}" if batch else "image")
            data = decode_base64(item.image, f"{where}.image", max_bytes)
        else:
            name = item.name or _url_name(item.image_url) or (f"image-{i}" if batch else "image")
            data = fetcher(item.image_url, policy)
        images.append(InputImage(name=name, data=data))
    return images


def decode_base64(text: str, where: str, max_bytes: int) -> bytes:
    """Standard or URL-safe base64, padding optional, whitespace and a data: URI prefix ignored."""
    body = text.strip()
    if body[:5].lower() == "data:":
        header, sep, body = body.partition(",")
        if not sep or ";base64" not in header.lower():
            raise InputError(f"{where}: a data: URI must be base64 (data:image/png;base64,...)")
    body = "".join(body.split())
    if not body:
        raise InputError(f"{where} is empty: send the image file base64-encoded")
    if len(body) * 3 // 4 > max_bytes + 2:
        raise InputError(f"{where}: image too large: about {len(body) * 3 // 4:,} bytes, limit {max_bytes:,}; "
                         "send a smaller image", code="image_too_large")
    body = body.translate(str.maketrans("-_", "+/"))
    body += "=" * (-len(body) % 4)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{where} is not valid base64 ({exc}); send the file's bytes base64-encoded") from None


def _url_name(url: Optional[str]) -> Optional[str]:
    try:
        name = posixpath.basename(unquote(urlsplit(url or "").path))
    except ValueError:
        return None
    return name[:255] or None


_ALLOWED = {"JobInput": sorted(JobInput.model_fields), "ImageItem": sorted(ImageItem.model_fields)}


def _describe(err: dict) -> str:
    loc = [str(p) for p in err.get("loc", ())]
    path = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".") or "input"
    if err.get("type") == "extra_forbidden":
        in_item = len(loc) >= 3 and loc[0] == "images"
        allowed = _ALLOWED["ImageItem" if in_item else "JobInput"]
        parent = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[:-1]).lstrip(".") or "input"
        return f"unknown key '{loc[-1]}' in {parent}; allowed keys: {', '.join(allowed)}"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{path}: {msg}"
