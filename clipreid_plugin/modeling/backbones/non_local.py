"""Non-local block (Wang et al., CVPR 2018) in fast-reid's form, as its AGW and SBS models place it.

A dot-product non-local block: ``z = W(softmax-free attention(theta, phi) @ g) + x``, the
attention being ``theta(x)^T phi(x) / N`` over the N = h*w positions, and ``W`` a 1x1 conv back
to the input width followed by a norm layer initialised to zero (the block starts as identity).

**fast-reid's channel count.** fast-reid computes the intermediate width as
``reduc_ratio // reduc_ratio``, i.e. **1** for every block, where the evident intent (and the
paper) is ``in_channels // reduc_ratio``; its model-zoo AGW / SBS checkpoints have that one-channel
shape (fast-reid issue #558: the maintainer found no gain from ``in_channels / 2``). This module
reproduces it by default (``inter_channels=1``), so those checkpoints load and compute what they
computed there; ``MODEL.BACKBONE.NL_HALF_CHANNELS True`` builds the paper's ``in_channels // 2``
(not loadable from fast-reid's zoo).
"""

import torch
from torch import nn

from .norm import norm_layer

__all__ = ["NonLocal"]


class NonLocal(nn.Module):
    """Dot-product non-local block with a residual connection.

    Parameter names (``g``, ``theta``, ``phi``, ``W.0``, ``W.1``) are fast-reid's ``Non_local``.

    Args:
        in_channels: channels of the input map.
        norm: ``MODEL.BACKBONE.NORM`` of the output norm layer ``W.1``.
        inter_channels: width of ``g`` / ``theta`` / ``phi`` (fast-reid: 1, see the module docstring).
    """

    def __init__(self, in_channels: int, norm: str = "BN", inter_channels: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.inter_channels = inter_channels
        self.g = nn.Conv2d(in_channels, inter_channels, kernel_size=1)
        self.W = nn.Sequential(nn.Conv2d(inter_channels, in_channels, kernel_size=1), norm_layer(norm, in_channels))
        nn.init.zeros_(self.W[1].weight)  # the block starts as the identity
        nn.init.zeros_(self.W[1].bias)
        self.theta = nn.Conv2d(in_channels, inter_channels, kernel_size=1)
        self.phi = nn.Conv2d(in_channels, inter_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, in_channels, h, w). Returns: x plus the non-local response, same shape."""
        b, c = x.shape[0], self.inter_channels
        g_x = self.g(x).reshape(b, c, -1).permute(0, 2, 1)          # (B, N, c)
        theta_x = self.theta(x).reshape(b, c, -1).permute(0, 2, 1)  # (B, N, c)
        phi_x = self.phi(x).reshape(b, c, -1)                       # (B, c, N)
        f = torch.matmul(theta_x, phi_x)                            # (B, N, N)
        y = torch.matmul(f / f.shape[-1], g_x)                      # mean over positions, not softmax
        y = y.permute(0, 2, 1).reshape(b, c, *x.shape[2:])
        return self.W(y) + x
