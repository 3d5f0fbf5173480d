"""Global pooling layers of a feature head, under fast-reid's ``MODEL.HEADS.POOL_LAYER`` names.

Every layer maps a (B, C, H, W) feature map to (B, C, 1, 1), as fast-reid's do, so a 1x1
convolution (``MODEL.HEADS.EMBEDDING_DIM``) and a BatchNorm2d neck can follow unchanged.

============================  =============================================================
name                          pooled value per channel
============================  =============================================================
``GlobalAvgPool``             mean over H x W (``adaptive_avg_pool2d``)
``FastGlobalAvgPool``         the same mean, computed on the flattened map
``GlobalMaxPool``             max over H x W
``AdaptiveAvgMaxPool``        mean + max (fast-reid's sum, not a concatenation)
``GeneralizedMeanPooling``    GeM, fixed p = 3: ``mean(clamp(x, 1e-6) ** p) ** (1 / p)``
``GeneralizedMeanPoolingP``   GeM with a learnable p (a parameter named ``p``, initial 3)
``ClipGlobalAvgPool``         the mean clamped to [0, 1]
``Identity``                  the input unchanged (an already pooled (B, C, 1, 1) input)
``Flatten``                   the map reshaped to (B, C*H*W, 1, 1)
============================  =============================================================

The toolkit's earlier short names stay valid and mean the same as before: ``avg`` =
``GlobalAvgPool``, ``max`` = ``GlobalMaxPool``, ``gem`` = ``GeneralizedMeanPooling``
(:data:`POOL_ALIASES`; the one place the two spellings meet). A (B, C) input (a ViT's class
token) is treated as a 1x1 map.
"""

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

from clipreid_plugin.utils.errors import ConfigError

__all__ = ["POOL_LAYERS", "POOL_ALIASES", "build_pool_layer", "GlobalAvgPool", "FastGlobalAvgPool", "GlobalMaxPool",
           "AdaptiveAvgMaxPool", "GeneralizedMeanPooling", "GeneralizedMeanPoolingP", "ClipGlobalAvgPool",
           "IdentityPool", "FlattenPool"]


def _as_map(x: torch.Tensor) -> torch.Tensor:
    """A (B, C) vector as a (B, C, 1, 1) map; maps unchanged."""
    return x[:, :, None, None] if x.dim() == 2 else x


class GlobalAvgPool(nn.Module):
    """Mean over the spatial positions (``adaptive_avg_pool2d`` to 1x1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(_as_map(x), 1)


class FastGlobalAvgPool(nn.Module):
    """Mean over the flattened spatial positions (the same value as GlobalAvgPool up to rounding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_map(x)
        b, c = x.shape[:2]
        return x.reshape(b, c, -1).mean(-1).view(b, c, 1, 1)


class GlobalMaxPool(nn.Module):
    """Max over the spatial positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_max_pool2d(_as_map(x), 1)


class AdaptiveAvgMaxPool(nn.Module):
    """Mean plus max over the spatial positions (fast-reid adds them)."""

    def __init__(self):
        super().__init__()
        self.gap, self.gmp = FastGlobalAvgPool(), GlobalMaxPool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gap(x) + self.gmp(x)


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling (Radenovic et al.): ``mean(clamp(x, eps) ** p) ** (1 / p)``, p fixed.

    Args:
        norm: the exponent p (> 0); 1 = average, large p approaches max pooling.
        eps: lower clamp, keeping the power of non-positive activations defined.
    """

    def __init__(self, norm: float = 3.0, eps: float = 1e-6):
        super().__init__()
        if norm <= 0:
            raise ConfigError(f"GeM pooling needs a positive exponent p, got {norm}.")
        self.p = float(norm)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_map(x).clamp(min=self.eps).pow(self.p)
        return F.adaptive_avg_pool2d(x, 1).pow(1.0 / self.p)


class GeneralizedMeanPoolingP(GeneralizedMeanPooling):
    """GeM pooling whose exponent is learned: parameter ``p`` (shape (1,), initial ``norm``)."""

    def __init__(self, norm: float = 3.0, eps: float = 1e-6):
        super().__init__(norm, eps)
        self.p = nn.Parameter(torch.ones(1) * norm)


class ClipGlobalAvgPool(nn.Module):
    """The spatial mean clamped to [0, 1]."""

    def __init__(self):
        super().__init__()
        self.avgpool = FastGlobalAvgPool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(x).clamp(min=0.0, max=1.0)


class IdentityPool(nn.Module):
    """No pooling: the input is already (B, C, 1, 1) (or (B, C))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _as_map(x)


class FlattenPool(nn.Module):
    """The whole map as one vector: (B, C, H, W) -> (B, C*H*W, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.size(0), -1, 1, 1)


POOL_LAYERS: Dict[str, Callable[[], nn.Module]] = {
    "GlobalAvgPool": GlobalAvgPool,
    "FastGlobalAvgPool": FastGlobalAvgPool,
    "GlobalMaxPool": GlobalMaxPool,
    "AdaptiveAvgMaxPool": AdaptiveAvgMaxPool,
    "GeneralizedMeanPooling": GeneralizedMeanPooling,
    "GeneralizedMeanPoolingP": GeneralizedMeanPoolingP,
    "ClipGlobalAvgPool": ClipGlobalAvgPool,
    "Identity": IdentityPool,
    "Flatten": FlattenPool,
}
# The toolkit's short names from before fast-reid's were adopted (same computation as then).
POOL_ALIASES: Dict[str, str] = {"avg": "GlobalAvgPool", "max": "GlobalMaxPool", "gem": "GeneralizedMeanPooling"}


def build_pool_layer(name: str) -> nn.Module:
    """The pooling layer ``MODEL.HEADS.POOL_LAYER`` names.

    Args:
        name: a key of :data:`POOL_LAYERS` or of :data:`POOL_ALIASES`.

    Returns:
        nn.Module mapping (B, C, H, W) to (B, C, 1, 1).

    Raises:
        ConfigError: an unknown name.
    """
    name = POOL_ALIASES.get(name, name)
    if name not in POOL_LAYERS:
        raise ConfigError(f"MODEL.HEADS.POOL_LAYER {name!r} is not a pooling layer; valid: "
                          f"{', '.join(list(POOL_LAYERS) + list(POOL_ALIASES))}.")
    return POOL_LAYERS[name]()
