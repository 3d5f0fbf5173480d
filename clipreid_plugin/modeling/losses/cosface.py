"""fast-reid's pairwise CosFace loss on the metric feature.

Similarities ``s = cos(f_i, f_j)``; per anchor, over its positives (self excluded) and negatives:
``softplus(logsumexp_p(-g s_p) + logsumexp_n(g (s_n + m)))``, averaged over anchors.
``m`` = ``MODEL.LOSSES.COSFACE.MARGIN``, ``g`` = ``GAMMA``.
"""

import torch
import torch.nn.functional as F

from .build import LOSS_REGISTRY
from .circle import _EXCLUDED, PairwiseMetricLoss, pair_masks
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
class Cosface(PairwiseMetricLoss):
    """Pairwise CosFace loss (:func:`pairwise_cosface_loss`); config ``MODEL.LOSSES.COSFACE.*``."""

    CONFIG_GROUP = "COSFACE"
    LOSS_KEY = "loss_cosface"
    pairwise = staticmethod(pairwise_cosface_loss)
