"""fast-reid's pairwise CosFace loss on the metric feature.

Similarities ``s = cos(f_i, f_j)``; per anchor, over its positives (self excluded) and negatives:
``softplus(logsumexp_p(-g s_p) + logsumexp_n(g (s_n + m)))``, averaged over anchors.
``m`` = ``MODEL.LOSSES.COSFACE.MARGIN``, ``g`` = ``GAMMA``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from clipreid_plugin.config import configurable

from .build import LOSS_REGISTRY
from .circle import _EXCLUDED, pair_masks
from .precision import full_precision

__all__ = ["pairwise_cosface_loss", "Cosface"]


def pairwise_cosface_loss(feats: torch.Tensor, targets: torch.Tensor, margin: float, gamma: float) -> torch.Tensor:
    """The pairwise CosFace loss of the module docstring. Returns: scalar, fp32 or wider."""
    with full_precision(feats) as (feats,):
        feats = F.normalize(feats, dim=1)
        sim = torch.matmul(feats, feats.t())
        is_pos, is_neg = pair_masks(sim, targets)
        s_p, s_n = sim * is_pos, sim * is_neg
        logit_p = -gamma * s_p + _EXCLUDED * (1 - is_pos)
        logit_n = gamma * (s_n + margin) + _EXCLUDED * (1 - is_neg)
        return F.softplus(torch.logsumexp(logit_p, dim=1) + torch.logsumexp(logit_n, dim=1)).mean()


@LOSS_REGISTRY.register()
class Cosface(nn.Module):
    """Pairwise CosFace loss summed over ``outputs["triplet_features"]``, times ``SCALE``.

    Config: ``MODEL.LOSSES.COSFACE.{MARGIN, GAMMA, SCALE}``.
    """

    reads = "triplet_features"

    @configurable
    def __init__(self, *, margin: float = 0.25, gamma: float = 128.0, scale: float = 1.0):
        super().__init__()
        self.margin, self.gamma, self.scale = margin, gamma, scale

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.LOSSES.COSFACE
        return {"margin": c.MARGIN, "gamma": c.GAMMA, "scale": c.SCALE}

    def forward(self, outputs, targets):
        """Returns: {"loss_cosface": scale * sum over feature lists}."""
        total = sum(pairwise_cosface_loss(f, targets, self.margin, self.gamma) for f in outputs["triplet_features"])
        return {"loss_cosface": total * self.scale}
