"""IBN-a normalisation (Pan et al., ECCV 2018): instance norm on half the channels, batch norm on the rest."""

import torch
from torch import nn

from .norm import norm_layer

__all__ = ["IBN"]


class IBN(nn.Module):
    """InstanceNorm2d (affine) on the first ``channels // 2`` channels, the backbone's norm on the others.

    Replaces ``bn1`` of the residual blocks of layer1-3 in an IBN-a ResNet. The sub-module names
    ``IN`` and ``BN`` are those of IBN-Net's and fast-reid's checkpoints, so their files load as is.

    Args:
        channels: channels of the input.
        norm: ``MODEL.BACKBONE.NORM`` of the batch-norm half.
    """

    def __init__(self, channels: int, norm: str = "BN"):
        super().__init__()
        self.half = channels // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = norm_layer(norm, channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, channels, h, w). Returns: the normalised map, same shape."""
        first, second = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat((self.IN(first.contiguous()), self.BN(second.contiguous())), dim=1)
