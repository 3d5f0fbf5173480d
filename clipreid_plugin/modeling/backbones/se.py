"""Squeeze-and-excitation (Hu et al., CVPR 2018) as fast-reid's ResNet uses it (``WITH_SE``)."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SELayer"]


class SELayer(nn.Module):
    """Channel gates from the globally pooled map: Linear (no bias) -> ReLU -> Linear (no bias) -> sigmoid.

    The names (``fc.0``, ``fc.2``) are fast-reid's and IBN-Net's (``se_resnet101_ibn_a``).

    Args:
        channels: channels of the input.
        reduction: width of the hidden layer is ``int(channels / reduction)``.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = int(channels / reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, h, w). Returns: x scaled per sample and channel."""
        gates = self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return x * gates[:, :, None, None]
