"""Grad-CAM overlays (the ``grad-cam`` package) rendered as PNG."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from pneumo_core.artifact.ensemble import view_thetas, warp
from pneumo_core.data.preprocess import TtaView


class GradCamRenderer:
    """Grad-CAM for the positive class on the model's cam layers (one per network of an ensemble:
    the grad-cam package averages their maps); fp32, thread-safe by a lock held by the caller
    (hooks on the model are shared state).

    With test-time ``views``, a map is computed on each view the served model sees, carried back
    onto the image, averaged where the views cover it and scaled to a peak of 1: the average of
    the per-view maps behind the averaged prediction the artifact serves.
    """

    def __init__(self, model: torch.nn.Module, layers: list[torch.nn.Module], views: Sequence[TtaView] = ()) -> None:
        from pytorch_grad_cam import GradCAM

        self.cam = GradCAM(model=model, target_layers=layers)
        self.views = tuple(views)
        if self.views:
            self.to_view, self.to_image = view_thetas(self.views), view_thetas(self.views, inverse=True)

    def __call__(self, x: np.ndarray, positive: int = 1) -> np.ndarray:
        """(C, S, S) input -> (S, S) map in [0, 1]."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        image = torch.from_numpy(x[None])
        if not self.views:
            return self.cam(input_tensor=image, targets=[ClassifierOutputTarget(positive)])[0]
        batch = torch.cat([warp(image, theta) for theta in self.to_view])
        maps = torch.from_numpy(self.cam(input_tensor=batch, targets=[ClassifierOutputTarget(positive)] * len(batch)))
        total = torch.zeros_like(maps[:1, None])
        cover = torch.zeros_like(total)
        for k, theta in enumerate(self.to_image):  # zeros outside a view: it says nothing there
            total += warp(maps[k:k + 1, None], theta, padding="zeros")
            cover += warp(torch.ones_like(maps[k:k + 1, None]), theta, padding="zeros")
        mean = (total / cover.clamp_min(1e-6))[0, 0].clamp_min(0)
        return (mean / mean.max().clamp_min(1e-6)).numpy()


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
