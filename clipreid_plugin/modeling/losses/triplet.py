"""Batch-hard triplet loss (Hermans et al. 2017) exactly as TransReID / CLIP-ReID compute it."""

import torch
import torch.nn.functional as F
from torch import nn

from .build import LOSS_REGISTRY
from .precision import full_precision

__all__ = ["euclidean_dist", "batch_hard_triplet_loss", "TripletLoss"]


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances ``sqrt(clamp(|x|^2 + |y|^2 - 2 x.y, 1e-12))``.

    Args:
        x: (m, d); y: (n, d).

    Returns:
        (m, n) distances.
    """
    xx = x.pow(2).sum(1, keepdim=True)
    yy = y.pow(2).sum(1, keepdim=True).t()
    dist = torch.addmm(xx + yy, x, y.t(), beta=1, alpha=-2)
    return dist.clamp(min=1e-12).sqrt()


def batch_hard_triplet_loss(feats: torch.Tensor, targets: torch.Tensor, margin: float,
                            soft_margin: bool = False, normalize: bool = False) -> torch.Tensor:
    """Hardest positive (max distance, self included) vs hardest negative (min distance).

    Args:
        feats: (B, d) features (not normalised unless ``normalize``).
        targets: (B,) identity labels.
        margin: ranking margin (ignored with ``soft_margin``).
        soft_margin: use ``log(1 + exp(d_ap - d_an))`` instead of the hinge.
        normalize: L2-normalise the features first.

    Returns:
        Scalar loss averaged over anchors, computed in fp32 (or wider) whatever the autocast state.
    """
    with full_precision(feats) as (feats,):
        if normalize:
            feats = F.normalize(feats, dim=1)
        dist = euclidean_dist(feats, feats)
        same = targets.unsqueeze(0) == targets.unsqueeze(1)
        dist_ap = dist.masked_fill(~same, float("-inf")).max(dim=1).values
        dist_an = dist.masked_fill(same, float("inf")).min(dim=1).values
        if soft_margin:
            return F.softplus(dist_ap - dist_an).mean()
        return F.relu(dist_ap - dist_an + margin).mean()


@LOSS_REGISTRY.register()
class TripletLoss(nn.Module):
    """Batch-hard triplet loss summed over ``outputs["triplet_features"]`` (list of (B, d)).

    Config: ``MODEL.LOSSES.TRI.{MARGIN, SOFT_MARGIN, NORM_FEAT, SCALE}``.
    """

    def __init__(self, cfg):
        super().__init__()
        c = cfg.MODEL.LOSSES.TRI
        self.margin, self.soft, self.norm, self.scale = c.MARGIN, c.SOFT_MARGIN, c.NORM_FEAT, c.SCALE

    def forward(self, outputs, targets):
        """Returns: {"loss_triplet": scale * sum over feature lists}."""
        total = sum(batch_hard_triplet_loss(f, targets, self.margin, self.soft, self.norm)
                    for f in outputs["triplet_features"])
        return {"loss_triplet": total * self.scale}
