"""EmbeddingHead: pooling, optional embedding, optional BNNeck, classifier layer (fast-reid's head).

The layout and parameter names are fast-reid's (``pool_layer``, ``bottleneck``, ``weight``,
``cls_layer``), so a fast-reid checkpoint's head loads under the same names:

* ``pool_layer``: ``MODEL.HEADS.POOL_LAYER`` (:mod:`.pooling`), (B, C, H, W) -> (B, C, 1, 1);
* ``bottleneck``: ``nn.Sequential`` of an optional 1x1 convolution to ``EMBEDDING_DIM`` (no
  bias; 0 = none) and, with ``WITH_BNNECK``, a BatchNorm2d whose bias is frozen at 0 (the
  BNNeck of Luo et al.);
* ``weight``: the (NUM_CLASSES, D) class weights (none when NUM_CLASSES is 0: inference only);
* ``cls_layer``: ``CLS_LAYER`` with ``SCALE`` / ``MARGIN`` (:mod:`.cls_layers`).

Features: ``pool_feat`` = the pooled feature, ``neck_feat`` = after the bottleneck (the pooled
feature itself when the bottleneck is empty). In evaluation the head returns ``neck_feat``
(``EVAL_FEAT "after"``, fast-reid's only behaviour) or ``pool_feat`` (``"before"``: the
TransReID / CLIP-ReID test convention). In training, ``NECK_FEAT`` picks the feature the metric
losses (triplet, circle, cosface) see: ``"before"`` = ``pool_feat``, ``"after"`` = ``neck_feat``.
"""

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipreid_plugin.config import configurable
from clipreid_plugin.utils.errors import ConfigError

from .bnneck import EVAL_FEATS, check_neck_feat
from .build import HEAD_REGISTRY
from .cls_layers import build_cls_layer
from .pooling import build_pool_layer

__all__ = ["EmbeddingHead", "frozen_bias_bn2d"]


def frozen_bias_bn2d(dim: int) -> nn.BatchNorm2d:
    """BatchNorm2d with weight 1, bias 0 and the bias not trained (the BNNeck's norm)."""
    bn = nn.BatchNorm2d(dim)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)
    return bn


@HEAD_REGISTRY.register()
class EmbeddingHead(nn.Module):
    """fast-reid's EmbeddingHead (see the module docstring).

    Config: ``MODEL.HEADS.{NUM_CLASSES, POOL_LAYER, EMBEDDING_DIM, WITH_BNNECK, CLS_LAYER, SCALE,
    MARGIN, NECK_FEAT, EVAL_FEAT, CLS_INIT_STD}``; context ``in_dim`` (the backbone's channels).

    Args:
        in_dim: channels of the feature map it receives.
        num_classes: training identities (0 = no classifier, inference only).
        pool_layer: a :data:`~.pooling.POOL_LAYERS` name (or an alias).
        embedding_dim: output width of the 1x1 convolution; 0 = no convolution.
        with_bnneck: add the BatchNorm (bias frozen) after the embedding.
        cls_layer: a :data:`~.cls_layers.CLS_LAYERS` name.
        scale, margin: the classifier layer's ``s`` and ``m``.
        neck_feat: ``"before"`` / ``"after"``: the training feature of the metric losses.
        eval_feat: ``"after"`` / ``"before"``: the feature returned in evaluation.
        cls_init_std: std of the normal init of the class weights (fast-reid 0.01,
            bag-of-tricks 0.001).
    """

    @configurable
    def __init__(self, *, in_dim: int, num_classes: int = 0, pool_layer: str = "GlobalAvgPool",
                 embedding_dim: int = 0, with_bnneck: bool = True, cls_layer: str = "Linear", scale: float = 1.0,
                 margin: float = 0.0, neck_feat: str = "before", eval_feat: str = "after",
                 cls_init_std: float = 0.001):
        super().__init__()
        self.neck_feat = check_neck_feat(neck_feat)
        if eval_feat not in EVAL_FEATS:
            raise ConfigError(f"MODEL.HEADS.EVAL_FEAT must be 'after' (post-neck feature) or 'before' (pooled "
                              f"feature), got {eval_feat!r}.")
        self.eval_feat = eval_feat
        self.pool_layer = build_pool_layer(pool_layer)
        if embedding_dim < 0:
            raise ConfigError(f"MODEL.HEADS.EMBEDDING_DIM must be >= 0 (0 = no embedding layer), got {embedding_dim}.")
        neck = []
        dim = in_dim
        if embedding_dim > 0:
            conv = nn.Conv2d(in_dim, embedding_dim, 1, 1, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out")
            neck.append(conv)
            dim = embedding_dim
        if with_bnneck:
            neck.append(frozen_bias_bn2d(dim))
        self.bottleneck = nn.Sequential(*neck)
        self.cls_layer = build_cls_layer(cls_layer, scale, margin)
        self.weight: Optional[nn.Parameter] = None
        if num_classes > 0:
            self.weight = nn.Parameter(torch.empty(num_classes, dim))
            nn.init.normal_(self.weight, std=cls_init_std)
        self.out_dim = dim

    @classmethod
    def from_config(cls, cfg, in_dim: int):
        h = cfg.MODEL.HEADS
        return {"in_dim": in_dim, "num_classes": h.NUM_CLASSES, "pool_layer": h.POOL_LAYER,
                "embedding_dim": h.EMBEDDING_DIM, "with_bnneck": h.WITH_BNNECK, "cls_layer": h.CLS_LAYER,
                "scale": h.SCALE, "margin": h.MARGIN, "neck_feat": h.NECK_FEAT, "eval_feat": h.EVAL_FEAT,
                "cls_init_std": h.CLS_INIT_STD}

    def features(self, x: torch.Tensor):
        """Returns: (pool_feat, neck_feat), both (B, D) (D = pooled / embedded width)."""
        pool_feat = self.pool_layer(x)
        neck_feat = self.bottleneck(pool_feat)
        return pool_feat[..., 0, 0], neck_feat[..., 0, 0]

    def classify(self, neck_feat: torch.Tensor, targets: torch.Tensor):
        """Returns: (cls_outputs, pred_class_logits): what CE sees, and raw logits x scale; (None, None)
        without class weights."""
        if self.weight is None:
            return None, None
        if self.cls_layer.cosine:
            logits = F.linear(F.normalize(neck_feat), F.normalize(self.weight))
        else:
            logits = F.linear(neck_feat, self.weight)
        return self.cls_layer(logits, targets), logits * self.cls_layer.s

    def forward(self, x: torch.Tensor, targets: Optional[torch.Tensor] = None):
        """Args: x (B, C, H, W) feature map or (B, C) vector; targets (B,) labels (training).

        Returns:
            Eval: (B, D) per ``eval_feat``.
            Training: dict with ``pool_feat``, ``neck_feat``, ``feat`` (= ``pool_feat``),
            ``cls_outputs`` [what CE sees], ``pred_class_logits`` (raw logits x scale) and
            ``triplet_features`` [the ``neck_feat``-chosen feature].
        """
        pool_feat, neck_feat = self.features(x)
        if not self.training:
            return neck_feat if self.eval_feat == "after" else pool_feat
        if targets is None and self.weight is not None:
            raise ValueError("EmbeddingHead needs the targets in training (the margin layers use them).")
        cls_outputs, pred_class_logits = self.classify(neck_feat, targets)
        features = pool_feat if self.neck_feat == "before" else neck_feat
        out: Dict[str, object] = {"pool_feat": pool_feat, "neck_feat": neck_feat, "feat": pool_feat,
                                  "cls_outputs": [cls_outputs], "pred_class_logits": pred_class_logits,
                                  "triplet_features": [features]}
        return out
