"""torchreid's head: global average pooling, ``fc`` (Linear + BN1d + ReLU), biased linear ``classifier``.

The end of torchreid's OSNet (``OSNet.forward`` after ``featuremaps``), as a head of its own so
that the OSNet backbone keeps working under the other heads and any backbone can take this one.
The feature the triplet loss sees, the identity loss classifies and the evaluator receives is
the same ``fc`` output ``v`` (no BNNeck); torchreid evaluates on it too.

Parameter names ``fc.0`` (Linear), ``fc.1`` (BatchNorm1d) and ``classifier`` are torchreid's
(``fc.2`` is the ReLU), so a torchreid checkpoint maps onto ``heads.fc.*`` / ``heads.classifier.*``.

torchreid's ImageNet OSNet files hold an ImageNet-trained ``fc`` too, and torchreid starts from it
(only the 1000-class classifier is discarded). So when ``MODEL.BACKBONE.PRETRAIN`` loads such a
file, this head takes its ``fc`` tensors from the same file (``pretrained_fc_path``).
"""

import os

from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from clipreid_plugin.config.configurable import configurable
from clipreid_plugin.utils.checkpoint import CheckpointError, read_state_dict

from .build import HEAD_REGISTRY

__all__ = ["TorchreidHead"]


@HEAD_REGISTRY.register()
class TorchreidHead(nn.Module):
    """Global average pool -> ``fc`` (Linear + BN1d + ReLU to ``embedding_dim``) -> biased classifier.

    Config: ``MODEL.HEADS.{EMBEDDING_DIM, NUM_CLASSES, CLS_INIT_STD}``.

    Args:
        in_dim: channels of the backbone's feature map (or width of its feature vector).
        embedding_dim: width of ``fc``; 0 = no ``fc``, the pooled feature is used directly
            (torchreid's ``fc_dims=None``).
        num_classes: training identities (0 = no classifier, evaluation only).
        init_std: std of the normal initialisation of the ``fc`` and classifier weights (torchreid:
            0.01; biases 0, BN weight 1).
        pretrained_fc_path: a torchreid ImageNet file whose ``fc.*`` tensors initialise ``fc``
            ("" = none; a file without them, or of another width, is an error).
    """

    @configurable
    def __init__(self, *, in_dim: int, embedding_dim: int = 512, num_classes: int = 0, init_std: float = 0.01,
                 pretrained_fc_path: str = ""):
        super().__init__()
        self.fc = None
        if embedding_dim > 0:
            self.fc = nn.Sequential(nn.Linear(in_dim, embedding_dim), nn.BatchNorm1d(embedding_dim), nn.ReLU())
            nn.init.normal_(self.fc[0].weight, 0, init_std)
            nn.init.zeros_(self.fc[0].bias)
        self.out_dim = embedding_dim if embedding_dim > 0 else in_dim
        self.classifier = nn.Linear(self.out_dim, num_classes) if num_classes > 0 else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, 0, init_std)
            nn.init.zeros_(self.classifier.bias)
        if pretrained_fc_path and self.fc is not None:
            self._load_fc(pretrained_fc_path)

    def _load_fc(self, path: str) -> None:
        sd = read_state_dict(os.path.expandvars(os.path.expanduser(path)))
        fc = {k[len("fc."):]: v for k, v in sd.items() if k.startswith("fc.")}
        own = self.fc.state_dict()
        if set(fc) != set(own) or any(tuple(fc[k].shape) != tuple(own[k].shape) for k in own):
            raise CheckpointError(f"{path} holds no torchreid fc of width {self.out_dim} (fc.0 / fc.1 tensors): "
                                  f"MODEL.HEADS.EMBEDDING_DIM must be the file's fc width (torchreid: 512).")
        self.fc.load_state_dict(fc)

    @classmethod
    def from_config(cls, cfg, in_dim: int) -> dict:
        h, b = cfg.MODEL.HEADS, cfg.MODEL.BACKBONE
        # torchreid's ImageNet OSNet files carry the fc this head starts from (see the module doc)
        from_imagenet = b.PRETRAIN and b.PRETRAIN_PATH and b.NAME == "build_osnet_backbone"
        return {"in_dim": in_dim, "embedding_dim": h.EMBEDDING_DIM, "num_classes": h.NUM_CLASSES,
                "init_std": h.CLS_INIT_STD, "pretrained_fc_path": b.PRETRAIN_PATH if from_imagenet else ""}

    def forward(self, x: torch.Tensor, targets: Optional[torch.Tensor] = None
                ) -> Union[Dict[str, object], torch.Tensor]:
        """Args: x (B, C, h, w) feature map or (B, C) vector; targets: unused (a plain linear classifier).

        Returns:
            Training: ``{"pool_feat": pooled, "feat": v, "cls_outputs": [logits], "triplet_features": [v]}``
            with ``v`` the ``fc`` output (logits None without a classifier). Eval: ``v`` (B, out_dim).
        """
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1) if x.dim() == 4 else x
        v = self.fc(pooled) if self.fc is not None else pooled
        if not self.training:
            return v
        logits = self.classifier(v) if self.classifier is not None else None
        return {"pool_feat": pooled, "feat": v, "cls_outputs": [logits], "triplet_features": [v]}
