"""BNNeck (Luo et al., bag of tricks): BatchNorm with a frozen bias, then a bias-free classifier."""

import torch
from torch import nn

from clipreid_plugin.utils.errors import ConfigError

__all__ = ["BNNeck", "NECK_FEATS", "EVAL_FEATS", "check_neck_feat"]

NECK_FEATS = ("before", "after")
EVAL_FEATS = ("after", "before")


def check_neck_feat(value: str) -> str:
    """Returns: ``value`` if it is a valid ``MODEL.HEADS.NECK_FEAT``; else ConfigError.

    :class:`~.embedding_head.EmbeddingHead` reads the key as fast-reid does: the feature the
    metric losses see in training (the evaluation feature is ``MODEL.HEADS.EVAL_FEAT``).
    """
    if value not in NECK_FEATS:
        raise ConfigError(f"MODEL.HEADS.NECK_FEAT must be 'before' (pre-BN feature) or 'after' "
                          f"(post-BNNeck feature), got {value!r}.")
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
