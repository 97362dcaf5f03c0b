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
        theta = [[[1 / v.scale, 0.0, -2 * v.dx], [0.0, 1 / v.scale, -2 * v.dy]] for v in views]
        self.register_buffer("theta", torch.tensor(theta, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        margins = []
        for k in range(self.theta.shape[0]):
            grid = F.affine_grid(self.theta[k:k + 1].expand(n, 2, 3).to(x.dtype), list(x.shape), align_corners=False)
            view = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
            logits = self.model(view).float()
            margins.append(logits[:, 1] - logits[:, 0])
        return mean_probability_logits(torch.stack(margins))


def unwrap_tta(model: nn.Module) -> nn.Module:
    """The network inside a TestTimeAugmentation wrapper (Grad-CAM looks at the unshifted view)."""
    return model.model if isinstance(model, TestTimeAugmentation) else model
