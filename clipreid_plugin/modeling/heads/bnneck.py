"""BNNeck (Luo et al., bag of tricks): BatchNorm with a frozen bias, then a bias-free classifier."""

import torch
from torch import nn

from clipreid_plugin.utils.errors import ConfigError

from .build import HEAD_REGISTRY

__all__ = ["BNNeck", "EmbeddingHead", "NECK_FEATS", "check_neck_feat"]

NECK_FEATS = ("before", "after")


def check_neck_feat(value: str) -> str:
    """Returns: ``value`` if it is a valid ``MODEL.HEADS.NECK_FEAT``; else ConfigError."""
    if value not in NECK_FEATS:
        raise ConfigError(f"MODEL.HEADS.NECK_FEAT must be 'before' (pre-BN test feature) or 'after' "
                          f"(post-BNNeck), got {value!r}.")
    return value


class BNNeck(nn.Module):
    """BatchNorm1d (bias frozen at 0) followed by a bias-free linear classifier.

    Parameter names (``bn``, ``classifier``) are the ones checkpoint converters map the
    reference's ``bottleneck`` / ``classifier`` keys onto.

    Args:
        in_dim: feature width.
        num_classes: number of training identities (0 = no classifier, inference only).
        cls_init_std: std of the normal init of the classifier weights (0.001 in the reference).
    """

    def __init__(self, in_dim: int, num_classes: int, cls_init_std: float = 0.001):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_dim)
        self.bn.bias.requires_grad_(False)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.classifier = nn.Linear(in_dim, num_classes, bias=False) if num_classes > 0 else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=cls_init_std)

    def forward(self, feat: torch.Tensor):
        """Args: feat (B, in_dim) pre-BN feature.

        Returns:
            (bn_feat, logits): the post-BN feature and the class scores (None in eval mode or
            without a classifier).
        """
        bn_feat = self.bn(feat)
        logits = self.classifier(bn_feat) if (self.training and self.classifier is not None) else None
        return bn_feat, logits


@HEAD_REGISTRY.register()
class EmbeddingHead(nn.Module):
    """Global pooling + BNNeck: the bag-of-tricks head for CNN feature maps.

    Config: ``MODEL.HEADS.{NUM_CLASSES, POOL_LAYER, NECK_FEAT, CLS_INIT_STD}``.

    Args:
        cfg: the config.
        in_dim: channels of the backbone's feature map.
    """

    def __init__(self, cfg, in_dim: int):
        super().__init__()
        self.pool = cfg.MODEL.HEADS.POOL_LAYER
        if self.pool not in ("avg", "max", "gem"):
            raise ConfigError(f"MODEL.HEADS.POOL_LAYER must be 'avg', 'max' or 'gem', got {self.pool!r}.")
        self.neck_feat = check_neck_feat(cfg.MODEL.HEADS.NECK_FEAT)
        self.neck = BNNeck(in_dim, cfg.MODEL.HEADS.NUM_CLASSES, cfg.MODEL.HEADS.CLS_INIT_STD)
        self.out_dim = in_dim

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x
        if self.pool == "avg":
            return x.mean(dim=(2, 3))
        if self.pool == "max":
            return x.amax(dim=(2, 3))
        return x.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1.0 / 3)  # GeM, p = 3

    def forward(self, x: torch.Tensor):
        """Args: x (B, C, H, W) feature map or (B, C) pooled feature.

        Returns:
            Training: dict with ``feat`` (the pre-BN feature), ``cls_outputs`` [logits] and
            ``triplet_features`` [feat].
            Eval: the embedding (B, C), post-BN when NECK_FEAT is "after", else pre-BN.
        """
        feat = self._pool(x)
        bn_feat, logits = self.neck(feat)
        if self.training:
            return {"feat": feat, "cls_outputs": [logits], "triplet_features": [feat]}
        return bn_feat if self.neck_feat == "after" else feat
