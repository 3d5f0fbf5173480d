"""CLIPBaseline: the CLIP-ReID paper's CNN/ViT baselines (an image encoder + two BNNecks).

Spec 2.5 / 4.4: the image encoder gives three pre-BN features; ``feat`` and ``feat_proj`` each
go through a BNNeck (BatchNorm with frozen bias, bias-free classifier). Training loss = ID loss
on both classifiers + batch-hard triplet on the pre-BN features, through the LOSS_REGISTRY
losses named in ``MODEL.LOSSES.NAMES``. The eval embedding is ``concat(feat, feat_proj)``
(``CLIPREID.NECK_FEAT`` "before", every shipped config) or the concat of their BN outputs
("after").

The encoder is whatever ``MODEL.BACKBONE.NAME`` builds (through BACKBONE_REGISTRY), read
through the backbone contract:

* ``feat`` = the pooled ``feature``;
* ``feat_last`` = the pooled ``intermediate`` when the backbone has one;
* ``feat_proj`` = the backbone's ``projected`` output, or a learned linear projection of
  ``feat`` (``image_proj``) when it has none (a torchvision ResNet or ViT). Its width is
  ``CLIPREID.PROJ_DIM`` (0 = 512 here; the text width for CLIPReID).

CLIP-ReID subclasses this model: it adds a text head and the image-to-text loss.
"""

from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from clipreid_plugin.config import configurable
from clipreid_plugin.modeling import (META_ARCH_REGISTRY, apply_losses, backbone_inputs, BNNeck, build_backbone,
                                      build_losses, check_backbone_output, global_pool)
from clipreid_plugin.utils.errors import ConfigError

__all__ = ["CLIPBaseline"]

# Width of the learned projection of CLIPBaseline on a backbone without a projected output
# (CLIP ViT-B/16's joint embedding width).
DEFAULT_PROJ_DIM = 512
TEST_FEATURES = ("before", "after")


def check_test_feature(value: str) -> str:
    """Returns: ``value`` if it is a valid ``CLIPREID.NECK_FEAT``; else ConfigError."""
    if value not in TEST_FEATURES:
        raise ConfigError(f"CLIPREID.NECK_FEAT is {value!r}; valid: 'before' (pre-BN test feature), 'after' "
                          f"(post-BNNeck).")
    return value


@META_ARCH_REGISTRY.register()
class CLIPBaseline(nn.Module):
    """Backbone (``MODEL.BACKBONE.*``) + BNNeck on ``feat`` and on ``feat_proj``.

    Attributes:
        backbone: the registered backbone (a CLIP image tower in the paper's configs).
        image_proj: learned projection ``feat -> feat_proj`` when the backbone has no projected
            output of the needed width, else None.
        neck: BNNeck on ``feat`` (the reference's ``bottleneck`` + ``classifier``).
        neck_proj: BNNeck on ``feat_proj`` (``bottleneck_proj`` + ``classifier_proj``).
        REFERENCE_KEY_MAP: ordered (reference prefix, our prefix) pairs used to convert the
            reference implementation's checkpoints; the first matching prefix wins.

    Built from a config (``CLIPBaseline(cfg)``; ``MODEL.HEADS.NUM_CLASSES`` > 0 for training)
    or from plain arguments.

    Args:
        backbone: the backbone.
        losses: the loss modules (built with the backbone's width as ``MODEL.BACKBONE.FEAT_DIM``).
        num_classes: training identities (0 = evaluation only, no classifiers).
        proj_dim: width the projected feature must have (None = the backbone's projected
            width, else 512; from a config: also ``CLIPREID.PROJ_DIM``).
        cls_init_std: std of the classifiers' normal initialisation.
        neck_feat: the test feature, "before" or "after" the BNNecks (``CLIPREID.NECK_FEAT``).
    """

    REFERENCE_KEY_MAP: List[Tuple[str, str]] = [
        ("image_encoder.", "backbone.visual."),
        ("cv_embed", "backbone.cv_embed"),
        ("bottleneck_proj.", "neck_proj.bn."),
        ("bottleneck.", "neck.bn."),
        ("classifier_proj.", "neck_proj.classifier."),
        ("classifier.", "neck.classifier."),
    ]

    @configurable
    def __init__(self, *, backbone: nn.Module, losses: nn.ModuleList, num_classes: int,
                 proj_dim: Optional[int] = None, cls_init_std: float = 0.001, neck_feat: str = "after"):
        super().__init__()
        self.backbone = backbone
        feat_dim = self.backbone.out_features
        own_proj = int(getattr(self.backbone, "proj_features", 0) or 0)
        if proj_dim is None:
            proj_dim = own_proj or DEFAULT_PROJ_DIM
        self.image_proj: Optional[nn.Linear] = None
        if own_proj != proj_dim:
            self.image_proj = nn.Linear(feat_dim, proj_dim, bias=False)
            nn.init.normal_(self.image_proj.weight, std=feat_dim ** -0.5)  # CLIP's projection init
        self.neck = BNNeck(feat_dim, num_classes, cls_init_std)
        self.neck_proj = BNNeck(proj_dim, num_classes, cls_init_std)
        self.losses = losses
        self.neck_feat = check_test_feature(neck_feat)

    @classmethod
    def from_config(cls, cfg, backbone: Optional[nn.Module] = None, proj_dim: Optional[int] = None) -> Dict:
        """Arguments from the config; ``backbone`` / ``proj_dim`` given by a subclass that builds the
        backbone itself (inside :func:`~clipreid_plugin.plugins.clipreid.backbone.shared_clip_models`)."""
        backbone = build_backbone(cfg) if backbone is None else backbone
        if proj_dim is None:
            proj_dim = int(getattr(backbone, "proj_features", 0) or 0) or cfg.CLIPREID.PROJ_DIM or None
        return {"backbone": backbone, "losses": build_losses(cfg, backbone.out_features),
                "num_classes": cfg.MODEL.HEADS.NUM_CLASSES, "proj_dim": proj_dim,
                "cls_init_std": cfg.MODEL.HEADS.CLS_INIT_STD, "neck_feat": cfg.CLIPREID.NECK_FEAT}

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (inputs are moved there)."""
        return next(self.parameters()).device

    @property
    def proj_dim(self) -> int:
        """Width of ``feat_proj``."""
        return self.neck_proj.bn.num_features

    def project(self, out) -> torch.Tensor:
        """``feat_proj`` of a :class:`BackboneOutput`: its ``projected`` or the learned projection."""
        if self.image_proj is not None:
            return self.image_proj(global_pool(out.feature))
        return out.projected

    def extract_features(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None,
                         viewids: Optional[torch.Tensor] = None) -> Dict[str, object]:
        """Run the backbone and both necks; everything a loss or a subclass may need.

        Args:
            images: (B, 3, H, W) on the model's device.
            camids, viewids: (B,) ids for a backbone with SIE (None = none).

        Returns:
            dict with ``feat`` and ``feat_proj`` (pre-BN), ``feat_last`` (when the backbone
            has an intermediate feature), ``bn_feat``, ``bn_feat_proj`` (post-BN), and in
            training mode ``cls_outputs`` [logits of ``neck``, logits of ``neck_proj``] and
            ``triplet_features`` [feat_last (if any), feat, feat_proj].
        """
        raw = check_backbone_output(self.backbone(images, camids, viewids), self.backbone)
        out: Dict[str, object] = {"feat": global_pool(raw.feature), "feat_proj": self.project(raw)}
        if raw.intermediate is not None:
            out["feat_last"] = global_pool(raw.intermediate)
        out["bn_feat"], logits = self.neck(out["feat"])
        out["bn_feat_proj"], logits_proj = self.neck_proj(out["feat_proj"])
        if self.training:
            out["cls_outputs"] = [logits, logits_proj]
            out["triplet_features"] = ([out["feat_last"]] if "feat_last" in out else []) + \
                [out["feat"], out["feat_proj"]]
        return out

    def embedding(self, out: Dict[str, object]) -> torch.Tensor:
        """The eval embedding from :meth:`extract_features`'s dict (per ``CLIPREID.NECK_FEAT``)."""
        if self.neck_feat == "after":
            return torch.cat([out["bn_feat"], out["bn_feat_proj"]], dim=1)
        return torch.cat([out["feat"], out["feat_proj"]], dim=1)

    def compute_losses(self, outputs: Dict[str, object], targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Apply every configured loss to :meth:`extract_features`'s training dict.

        Returns:
            ``{"loss_<name>": scalar}``, already weighted.

        Raises:
            ConfigError: the model was built without classifiers (``MODEL.HEADS.NUM_CLASSES`` 0).
        """
        return apply_losses(self.losses, outputs, targets)

    def forward(self, batch: Dict[str, torch.Tensor]) -> Union[Dict[str, torch.Tensor], torch.Tensor]:
        """Args: batch with ``images`` (B, 3, H, W) normalised, ``targets`` (training), and
        ``camids`` / ``viewids`` (read when the backbone has SIE).

        Returns:
            Training: ``{"loss_<name>": scalar}`` from every configured loss, already weighted.
            Eval: (B, feat width + proj width) embedding.
        """
        images, camids, viewids = backbone_inputs(self.backbone, batch, self.device)
        out = self.extract_features(images, camids, viewids)
        if not self.training:
            return self.embedding(out)
        targets = batch["targets"].to(self.device, non_blocking=True)
        return self.compute_losses(out, targets)
