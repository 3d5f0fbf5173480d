"""Triplet loss (Hermans et al. 2017) with fast-reid's options.

* distance: Euclidean, or with ``NORM_FEAT`` the cosine distance ``2 - 2 cos`` (fast-reid);
* mining (``HARD_MINING``): the hardest positive (largest distance, self included) and hardest
  negative per anchor, or the weighted-regularised triplet of AGW (softmax over the positives'
  distances / the negatives' negated distances weights each anchor's positives / negatives);
* ranking: hinge ``max(0, d_ap - d_an + margin)``, or the soft margin ``log(1 + exp(d_ap - d_an))``
  when ``MARGIN <= 0`` (fast-reid) or ``SOFT_MARGIN`` (CLIP-ReID's ``NO_MARGIN``). A soft-margin
  loss that overflows to inf is replaced by the hinge with margin 0.3, as fast-reid does.

Averaged over the anchors. With Euclidean distances, hard mining and a hinge this is exactly
TransReID's / CLIP-ReID's batch-hard triplet.
"""

import torch
import torch.nn.functional as F
from torch import nn

from clipreid_plugin.config import configurable

from .build import LOSS_REGISTRY
from .precision import full_precision

__all__ = ["euclidean_dist", "cosine_dist", "hard_example_mining", "weighted_example_mining", "triplet_loss",
           "TripletLoss"]

# fast-reid's fallback margin when the soft margin overflows
_OVERFLOW_MARGIN = 0.3


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


def cosine_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine distances ``2 - 2 cos(x_i, y_j)`` (the squared distance of unit vectors)."""
    return 2 - 2 * torch.mm(F.normalize(x, dim=1), F.normalize(y, dim=1).t())


def hard_example_mining(dist: torch.Tensor, is_pos: torch.Tensor, is_neg: torch.Tensor):
    """Hardest positive and negative per anchor.

    Args:
        dist: (N, N) distances (>= 0).
        is_pos / is_neg: (N, N) float masks (1 = same / different identity).

    Returns:
        (dist_ap, dist_an), each (N,).
    """
    dist_ap = (dist * is_pos).max(dim=1).values
    dist_an = (dist * is_neg + is_pos * 1e9).min(dim=1).values
    return dist_ap, dist_an


def _softmax_weights(dist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of ``dist`` over the masked entries of each row (1e-6 guards an empty row)."""
    max_v = (dist * mask).max(dim=1, keepdim=True).values
    exp = torch.exp(dist - max_v)
    z = (exp * mask).sum(dim=1, keepdim=True) + 1e-6
    return exp * mask / z


def weighted_example_mining(dist: torch.Tensor, is_pos: torch.Tensor, is_neg: torch.Tensor):
    """Softmax-weighted positive and negative distance per anchor (weighted-regularised triplet).

    Returns:
        (dist_ap, dist_an), each (N,): far positives and near negatives weigh most.
    """
    dist_ap = dist * is_pos
    dist_an = dist * is_neg
    weights_ap = _softmax_weights(dist_ap, is_pos)
    weights_an = _softmax_weights(-dist_an, is_neg)
    return (dist_ap * weights_ap).sum(dim=1), (dist_an * weights_an).sum(dim=1)


def triplet_loss(feats: torch.Tensor, targets: torch.Tensor, margin: float, soft_margin: bool = False,
                 norm_feat: bool = False, hard_mining: bool = True) -> torch.Tensor:
    """The triplet loss of the module docstring.

    Args:
        feats: (B, d) features.
        targets: (B,) identity labels.
        margin: hinge margin; <= 0 = soft margin.
        soft_margin: soft margin whatever ``margin`` says.
        norm_feat: cosine distance ``2 - 2 cos`` instead of the Euclidean distance.
        hard_mining: hardest examples (True) or softmax-weighted ones (False).

    Returns:
        Scalar loss averaged over anchors, computed in fp32 (or wider) whatever the autocast state.
    """
    with full_precision(feats) as (feats,):
        dist = cosine_dist(feats, feats) if norm_feat else euclidean_dist(feats, feats)
        same = targets.unsqueeze(0) == targets.unsqueeze(1)
        is_pos, is_neg = same.to(dist.dtype), (~same).to(dist.dtype)
        mine = hard_example_mining if hard_mining else weighted_example_mining
        dist_ap, dist_an = mine(dist, is_pos, is_neg)
        if soft_margin or margin <= 0:
            loss = torch.log1p(torch.exp(dist_ap - dist_an)).mean()
            if not torch.isinf(loss):
                return loss
            margin = _OVERFLOW_MARGIN
        return F.relu(dist_ap - dist_an + margin).mean()


@LOSS_REGISTRY.register()
class TripletLoss(nn.Module):
    """Triplet loss summed over ``outputs["triplet_features"]`` (list of (B, d)), times ``SCALE``.

    Config: ``MODEL.LOSSES.TRI.{MARGIN, SOFT_MARGIN, NORM_FEAT, HARD_MINING, SCALE}``.
    """

    reads = "triplet_features"  # the training-output list this loss consumes (MGN composes per feature)

    @configurable
    def __init__(self, *, margin: float = 0.3, soft_margin: bool = False, norm_feat: bool = False,
                 hard_mining: bool = True, scale: float = 1.0):
        super().__init__()
        self.margin, self.soft, self.norm, self.hard, self.scale = margin, soft_margin, norm_feat, hard_mining, scale

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.LOSSES.TRI
        return {"margin": c.MARGIN, "soft_margin": c.SOFT_MARGIN, "norm_feat": c.NORM_FEAT,
                "hard_mining": c.HARD_MINING, "scale": c.SCALE}

    def forward(self, outputs, targets):
        """Returns: {"loss_triplet": scale * sum over feature lists}."""
        total = sum(triplet_loss(f, targets, self.margin, self.soft, self.norm, self.hard)
                    for f in outputs["triplet_features"])
        return {"loss_triplet": total * self.scale}
