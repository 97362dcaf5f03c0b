"""One row per image in a shard file and in ``predictions.json``: the path, and either the shared
:class:`~pneumo_core.inference.ImageResult` (as REST, RunPod and ``pneumo predict --json`` give
it) or the error that kept the image from being classified."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field, model_validator

from pneumo_core.inference import ImageResult


class RowError(BaseModel):
    """Why one image has no result: the error code adapters report (e.g. ``unreadable_image``,
    ``file_not_found``, ``out_of_distribution``) and its message."""

    code: str
    message: str


class ShardRow(BaseModel):
    """One input image: exactly one of ``result`` and ``error`` is set."""

    path: str = Field(description="The image file, absolute.")
    result: Optional[ImageResult] = None
    error: Optional[RowError] = None

    @model_validator(mode="after")
    def _one_of(self) -> "ShardRow":
        if (self.result is None) == (self.error is None):
            raise ValueError("a row has either a result or an error")
        return self
