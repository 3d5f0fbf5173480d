"""fast-reid's pairwise circle loss (Sun et al. 2020) on the metric feature.

Similarities ``s = cos(f_i, f_j)``; per anchor, over its positives (self excluded) and negatives:
``softplus(logsumexp_p(-g a_p (s_p - (1 - m))) + logsumexp_n(g a_n (s_n - m)))`` with the
self-paced weights ``a_p = max(1 + m - s_p, 0)``, ``a_n = max(s_n + m, 0)`` taken as constants;
averaged over anchors. ``m`` = ``MODEL.LOSSES.CIRCLE.MARGIN``, ``g`` = ``GAMMA``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from clipreid_plugin.config import configurable

from .build import LOSS_REGISTRY
from .precision import full_precision

__all__ = ["pair_masks", "pairwise_softplus_loss", "pairwise_circle_loss", "PairwiseMetricLoss", "CircleLoss"]

# logit given to the pairs a row leaves out (fast-reid's constant): exp() of it is 0
_EXCLUDED = -99999999.0


def pair_masks(sim: torch.Tensor, targets: torch.Tensor):
    """Returns: (is_pos, is_neg) float (N, N) masks; is_pos excludes the diagonal (self pairs)."""
    n = sim.size(0)
    same = targets.unsqueeze(0) == targets.unsqueeze(1)
    is_pos = same.to(sim.dtype) - torch.eye(n, dtype=sim.dtype, device=sim.device)
    return is_pos, (~same).to(sim.dtype)


def pairwise_softplus_loss(feats: torch.Tensor, targets: torch.Tensor, pair_logits) -> torch.Tensor:
    """fast-reid's pairwise form: ``softplus(logsumexp_p(logit_p) + logsumexp_n(logit_n))`` per
    anchor, averaged, on the cosine similarities of the L2-normalised features.

    Args:
        feats: (N, D) features.
        targets: (N,) identities.
        pair_logits: ``(s_p, s_n) -> (logit_p, logit_n)`` on the masked (N, N) similarities; the pairs
            a row leaves out are then given :data:`_EXCLUDED`.

    Returns:
        scalar, fp32 or wider.
    """
    with full_precision(feats) as (feats,):
        feats = F.normalize(feats, dim=1)
        sim = torch.matmul(feats, feats.t())
        is_pos, is_neg = pair_masks(sim, targets)
        logit_p, logit_n = pair_logits(sim * is_pos, sim * is_neg)
        logit_p = logit_p + _EXCLUDED * (1 - is_pos)
        logit_n = logit_n + _EXCLUDED * (1 - is_neg)
        return F.softplus(torch.logsumexp(logit_p, dim=1) + torch.logsumexp(logit_n, dim=1)).mean()


def pairwise_circle_loss(feats: torch.Tensor, targets: torch.Tensor, margin: float, gamma: float) -> torch.Tensor:
    """The pairwise circle loss of the module docstring. Returns: scalar, fp32 or wider."""

    def circle_logits(s_p, s_n):
        alpha_p = (-s_p.detach() + 1 + margin).clamp(min=0.0)
        alpha_n = (s_n.detach() + margin).clamp(min=0.0)
        return -gamma * alpha_p * (s_p - (1 - margin)), gamma * alpha_n * (s_n - margin)

    return pairwise_softplus_loss(feats, targets, circle_logits)


class PairwiseMetricLoss(nn.Module):
    """A pairwise loss of fast-reid's summed over ``outputs["triplet_features"]``, times ``SCALE``.

    A subclass names its config group (``MODEL.LOSSES.<CONFIG_GROUP>.{MARGIN, GAMMA, SCALE}``),
    the key of its loss and its ``pairwise(feats, targets, margin, gamma)`` function.
    """

    reads = "triplet_features"
    CONFIG_GROUP = ""
    LOSS_KEY = ""

    @staticmethod
    def pairwise(feats: torch.Tensor, targets: torch.Tensor, margin: float, gamma: float) -> torch.Tensor:
        raise NotImplementedError

    @configurable
    def __init__(self, *, margin: float = 0.25, gamma: float = 128.0, scale: float = 1.0):
        super().__init__()
        self.margin, self.gamma, self.scale = margin, gamma, scale

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.LOSSES[cls.CONFIG_GROUP]
        return {"margin": c.MARGIN, "gamma": c.GAMMA, "scale": c.SCALE}

    def forward(self, outputs, targets):
        """Returns: {LOSS_KEY: scale * sum over feature lists}."""
        total = sum(self.pairwise(f, targets, self.margin, self.gamma) for f in outputs["triplet_features"])
        return {self.LOSS_KEY: total * self.scale}


@LOSS_REGISTRY.register()
class CircleLoss(PairwiseMetricLoss):
    """Pairwise circle loss (:func:`pairwise_circle_loss`); config ``MODEL.LOSSES.CIRCLE.*``."""

    CONFIG_GROUP = "CIRCLE"
    LOSS_KEY = "loss_circle"
    pairwise = staticmethod(pairwise_circle_loss)
