"""Ensembles and test-time augmentation as networks: each wraps models and is itself an
``nn.Module`` mapping ``(N, C, S, S)`` inputs to two-class logits, so every consumer (the torch
backend, ONNX export as one graph, evaluation) serves them unchanged.

Both average calibrated probabilities, not logits: member ``i``'s positive margin
``logit[1] - logit[0]`` is divided by its own temperature, passed through a sigmoid, averaged, and
returned as the logits ``[0, logit(mean p)]``; the artifact's temperature and threshold, fitted
on validation data for the combination, then apply as for a single network.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pneumo_core.data.preprocess import TtaView

_EPS = 1e-6


def mean_probability_logits(margins: torch.Tensor) -> torch.Tensor:
    """(K, N) calibrated margins -> (N, 2) logits of the mean probability over K."""
    p = torch.sigmoid(margins.float()).mean(0).clamp(_EPS, 1 - _EPS)
    logit = torch.log(p) - torch.log1p(-p)
    return torch.stack([torch.zeros_like(logit), logit], 1)


# Identity, small shifts and zooms: a few percent of the side, as a radiograph is framed differently.
DEFAULT_TTA = (TtaView(), TtaView(dx=0.04), TtaView(dx=-0.04), TtaView(dy=0.04), TtaView(dy=-0.04),
               TtaView(scale=1.06), TtaView(scale=0.94))


class Ensemble(nn.Module):
    """Members' calibrated probabilities, averaged. ``temperatures[i]`` calibrates member ``i``."""

    def __init__(self, members: Sequence[nn.Module], temperatures: Sequence[float]) -> None:
        super().__init__()
        if not members or len(members) != len(temperatures):
            raise ValueError("an ensemble needs one temperature per member, and at least one member")
        self.members = nn.ModuleList(members)
        # not in the state dict: the temperatures live in model.json
        self.register_buffer("temperatures", torch.tensor(list(temperatures), dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margins = []
        for i, member in enumerate(self.members):
            logits = member(x).float()
            margins.append((logits[:, 1] - logits[:, 0]) / self.temperatures[i])
        return mean_probability_logits(torch.stack(margins))


class TestTimeAugmentation(nn.Module):
    """The wrapped model's probabilities averaged over ``views`` (shifts and zooms of the input;
    edges are repeated where a view moves the image)."""

    def __init__(self, model: nn.Module, views: Sequence[TtaView]) -> None:
        super().__init__()
        self.model = model
        self.views = tuple(views)
        self.register_buffer("theta", view_thetas(views), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margins = []
        for k in range(self.theta.shape[0]):
            logits = self.model(warp(x, self.theta[k])).float()
            margins.append(logits[:, 1] - logits[:, 0])
        return mean_probability_logits(torch.stack(margins))


def view_thetas(views: Sequence[TtaView], inverse: bool = False) -> torch.Tensor:
    """(K, 2, 3) affine maps from a view's coordinates to the image's (``inverse``: the image's to
    the view's, which carries a map computed on the view back onto the image)."""
    if inverse:
        theta = [[[v.scale, 0.0, 2 * v.dx * v.scale], [0.0, v.scale, 2 * v.dy * v.scale]] for v in views]
    else:
        theta = [[[1 / v.scale, 0.0, -2 * v.dx], [0.0, 1 / v.scale, -2 * v.dy]] for v in views]
    return torch.tensor(theta, dtype=torch.float32)


def warp(x: torch.Tensor, theta: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """``x`` (N, C, H, W) resampled through one (2, 3) affine map; ``padding`` "border" repeats
    the edges where the map leaves the image, "zeros" leaves zeros."""
    grid = F.affine_grid(theta[None].expand(x.shape[0], 2, 3).to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def unwrap_tta(model: nn.Module) -> tuple[nn.Module, tuple[TtaView, ...]]:
    """The network inside a TestTimeAugmentation wrapper and its views (none for a bare network):
    Grad-CAM runs the network on each view itself, then averages the maps."""
    return (model.model, model.views) if isinstance(model, TestTimeAugmentation) else (model, ())
