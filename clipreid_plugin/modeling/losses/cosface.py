"""fast-reid's pairwise CosFace loss on the metric feature.

Similarities ``s = cos(f_i, f_j)``; per anchor, over its positives (self excluded) and negatives:
``softplus(logsumexp_p(-g s_p) + logsumexp_n(g (s_n + m)))``, averaged over anchors.
``m`` = ``MODEL.LOSSES.COSFACE.MARGIN``, ``g`` = ``GAMMA``.
"""

import torch

from .build import LOSS_REGISTRY
from .circle import PairwiseMetricLoss, pairwise_softplus_loss

__all__ = ["pairwise_cosface_loss", "Cosface"]


def pairwise_cosface_loss(feats: torch.Tensor, targets: torch.Tensor, margin: float, gamma: float) -> torch.Tensor:
    """The pairwise CosFace loss of the module docstring. Returns: scalar, fp32 or wider."""
    return pairwise_softplus_loss(feats, targets, lambda s_p, s_n: (-gamma * s_p, gamma * (s_n + margin)))


@LOSS_REGISTRY.register()
class Cosface(PairwiseMetricLoss):
    """Pairwise CosFace loss (:func:`pairwise_cosface_loss`); config ``MODEL.LOSSES.COSFACE.*``."""

    CONFIG_GROUP = "COSFACE"
    LOSS_KEY = "loss_cosface"
    pairwise = staticmethod(pairwise_cosface_loss)
