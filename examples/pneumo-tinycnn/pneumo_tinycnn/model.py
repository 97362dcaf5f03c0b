"""TinyCNN: a small VGG-style network for grayscale chest X-rays, and its parameters."""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class TinyCNNParams(BaseModel):
    """``model.params`` of a config that selects ``model.name: tinycnn``."""

    model_config = ConfigDict(extra="forbid")  # a typo in a config is an error, not ignored
    width: int = Field(16, ge=4, le=128, description="Channels of the first block; each next block doubles them (max 256).")
    depth: int = Field(4, ge=1, le=6, description="Number of conv blocks; each but the first halves the resolution.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout before the classifier.")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions with batch norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class TinyCNN(nn.Module):
    """``(N, in_chans, H, W)`` -> ``(N, num_classes)`` logits.

    ``blocks[-1]`` is the last conv block: its output is the last spatial feature map, which is
    what Grad-CAM needs.
    """

    def __init__(self, in_chans: int, num_classes: int, width: int = 16, depth: int = 4,
                 dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for i in range(depth):
            out = min(width * 2 ** i, 256)
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers.append(ConvBlock(channels, out))
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)

    @property
    def blocks(self) -> list[ConvBlock]:
        return [m for m in self.features if isinstance(m, ConvBlock)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))
