"""Augmentation plugin ``albumentations``: presets none / light / standard / strong.

Operates on HxW uint8 images already resized to the training size. Horizontal flips are off by
default: chest radiographs have laterality (heart on the left).
"""
from __future__ import annotations

from typing import Literal, Optional

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pneumo_core import AugmentationSpec, hookimpl

_PRESETS = {  # rotate (deg), scale (+/-), translate (+/-), brightness, contrast, gamma (+/- %)
    "none": dict(rotate=0, scale=0, translate=0, brightness=0, contrast=0, gamma=0, blur_p=0, noise_p=0, dropout_p=0, crop_scale=1.0, clahe_p=0),
    "light": dict(rotate=7, scale=0.08, translate=0.05, brightness=0.1, contrast=0.1, gamma=10, blur_p=0, noise_p=0, dropout_p=0, crop_scale=1.0, clahe_p=0),
    "standard": dict(rotate=10, scale=0.12, translate=0.07, brightness=0.2, contrast=0.2, gamma=20, blur_p=0.2, noise_p=0.2, dropout_p=0, crop_scale=0.85, clahe_p=0.1),
    "strong": dict(rotate=15, scale=0.18, translate=0.1, brightness=0.3, contrast=0.3, gamma=30, blur_p=0.3, noise_p=0.3, dropout_p=0.3, crop_scale=0.7, clahe_p=0.2),
}


class AlbumentationsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: Literal["none", "light", "standard", "strong"] = "light"
    rotate: Optional[float] = Field(None, ge=0, le=45, description="Max rotation in degrees.")
    scale: Optional[float] = Field(None, ge=0, le=0.5, description="Max relative zoom in/out.")
    translate: Optional[float] = Field(None, ge=0, le=0.3, description="Max shift as a fraction of size.")
    brightness: Optional[float] = Field(None, ge=0, le=0.8)
    contrast: Optional[float] = Field(None, ge=0, le=0.8)
    gamma: Optional[float] = Field(None, ge=0, le=80, description="Max gamma change in percent.")
    blur_p: Optional[float] = Field(None, ge=0, le=1)
    noise_p: Optional[float] = Field(None, ge=0, le=1)
    dropout_p: Optional[float] = Field(None, ge=0, le=1, description="Probability of coarse dropout.")
    crop_scale: Optional[float] = Field(None, gt=0.3, le=1, description="Smallest area kept by random resized crop.")
    clahe_p: Optional[float] = Field(None, ge=0, le=1)
    hflip_p: float = Field(0.0, ge=0, le=1, description="Horizontal flip probability (off: laterality).")


def build(params: AlbumentationsParams, image_size: int, train: bool):
    import albumentations as A

    if not train or params.preset == "none" and not params.model_fields_set - {"preset"}:
        return lambda image: image
    p = dict(_PRESETS[params.preset])
    p.update({k: v for k, v in params.model_dump().items() if k in p and v is not None})
    ops = []
    if p["crop_scale"] < 1:
        ops.append(A.RandomResizedCrop(size=(image_size, image_size), scale=(p["crop_scale"], 1.0),
                                       ratio=(0.9, 1.1), interpolation=cv2.INTER_AREA, p=0.5))
    if p["rotate"] or p["scale"] or p["translate"]:
        ops.append(A.Affine(rotate=(-p["rotate"], p["rotate"]), scale=(1 - p["scale"], 1 + p["scale"]),
                            translate_percent=(-p["translate"], p["translate"]),
                            border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.8))
    if params.hflip_p:
        ops.append(A.HorizontalFlip(p=params.hflip_p))
    if p["brightness"] or p["contrast"]:
        ops.append(A.RandomBrightnessContrast(brightness_limit=p["brightness"], contrast_limit=p["contrast"], p=0.8))
    if p["gamma"]:
        ops.append(A.RandomGamma(gamma_limit=(100 - p["gamma"], 100 + p["gamma"]), p=0.5))
    if p["clahe_p"]:
        ops.append(A.CLAHE(clip_limit=2.0, p=p["clahe_p"]))
    if p["blur_p"]:
        ops.append(A.GaussianBlur(blur_limit=(3, 5), p=p["blur_p"]))
    if p["noise_p"]:
        ops.append(A.GaussNoise(std_range=(0.01, 0.04), p=p["noise_p"]))
    if p["dropout_p"]:
        ops.append(A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15),
                                   hole_width_range=(0.05, 0.15), fill=0, p=p["dropout_p"]))
    compose = A.Compose(ops)
    return _Augment(compose)


class _Augment:
    """Callable wrapper: ``aug(image) -> image``; ``set_random_seed`` makes it reproducible."""

    def __init__(self, compose) -> None:
        self.compose = compose

    def set_random_seed(self, seed: int) -> None:
        self.compose.set_random_seed(seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.compose(image=image)["image"]


@hookimpl
def pneumo_augmentations():
    return [AugmentationSpec(name="albumentations", build=build, params_model=AlbumentationsParams,
                             description="albumentations presets: none, light, standard, strong")]
