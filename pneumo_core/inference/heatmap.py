"""Grad-CAM overlays (the ``grad-cam`` package) rendered as PNG."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


class GradCamRenderer:
    """Grad-CAM for the positive class on the model's cam layers (one per network of an ensemble:
    the grad-cam package averages their maps); fp32, thread-safe by a lock held by the caller
    (hooks on the model are shared state)."""

    def __init__(self, model: torch.nn.Module, layers: list[torch.nn.Module]) -> None:
        from pytorch_grad_cam import GradCAM

        self.cam = GradCAM(model=model, target_layers=layers)

    def __call__(self, x: np.ndarray, positive: int = 1) -> np.ndarray:
        """(C, S, S) input -> (S, S) map in [0, 1]."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        return self.cam(input_tensor=torch.from_numpy(x[None]), targets=[ClassifierOutputTarget(positive)])[0]


def overlay_png(gray: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> bytes:
    """Blend a jet-coloured map over the grayscale image (both S x S) and encode PNG."""
    base = np.repeat(gray[..., None].astype(np.float32) / 255.0, 3, axis=2)
    from matplotlib import colormaps  # here, so that serving without heatmaps never loads matplotlib

    colour = colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    weight = alpha * np.clip(cam, 0, 1)[..., None] ** 0.5
    mixed = (base * (1 - weight) + colour * weight) * 255
    buf = io.BytesIO()
    Image.fromarray(mixed.astype(np.uint8)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()
