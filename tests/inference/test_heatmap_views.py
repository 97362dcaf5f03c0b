"""Grad-CAM over test-time views: each view's map is carried back onto the image and averaged."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pneumo_core.data.preprocess import TtaView
from pneumo_core.inference.heatmap import GradCamRenderer


class _Brightness(nn.Module):
    """Positive logit = mean of a 1x1 identity layer: its Grad-CAM map is the input itself."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.feat.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.feat(x).mean((1, 2, 3))
        return torch.stack([-m, m], 1)


def _blob(size: int = 64, cy: int = 22, cx: int = 40) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0).astype(np.float32)[None]


def test_views_maps_land_where_the_image_is():
    model = _Brightness()
    x = _blob()
    plain = GradCamRenderer(model, [model.feat])(x)
    views = (TtaView(), TtaView(dx=0.1), TtaView(dy=-0.1), TtaView(scale=1.2), TtaView(scale=0.85),
             TtaView(dx=0.1, dy=-0.05, scale=1.2))
    averaged = GradCamRenderer(model, [model.feat], views)(x)
    assert averaged.shape == plain.shape == (64, 64)
    assert np.unravel_index(averaged.argmax(), averaged.shape) == np.unravel_index(plain.argmax(), plain.shape)
    assert np.abs(averaged - plain).max() < 0.1  # resampling blurs a little; a misplaced view would move the peak


def test_a_single_shifted_and_zoomed_view_is_carried_back():
    model = _Brightness()
    x = _blob()
    plain = GradCamRenderer(model, [model.feat])(x)
    shifted = GradCamRenderer(model, [model.feat], (TtaView(dx=0.12, dy=0.05, scale=1.25),))(x)
    peak = np.unravel_index(plain.argmax(), plain.shape)
    assert np.unravel_index(shifted.argmax(), shifted.shape) == peak
    assert 0.0 <= shifted.min() and shifted.max() == pytest.approx(1.0)
