"""CLIPBaseline: the CLIP-ReID paper's CNN/ViT baselines (CLIP image encoder + two BNNecks).

Spec 2.5 / 4.4: the CLIP image encoder gives three pre-BN features; ``feat`` and
``feat_proj`` each go through a BNNeck (BatchNorm with frozen bias, bias-free classifier).
Training loss = ID loss on both classifiers + batch-hard triplet on the three pre-BN features,
through the LOSS_REGISTRY losses named in ``MODEL.LOSSES.NAMES``. The eval embedding is
``concat(feat, feat_proj)`` (``MODEL.HEADS.NECK_FEAT`` "before", every shipped config) or the
concat of their BN outputs ("after").

CLIP-ReID subclasses this class: it adds a prompt learner and an image-to-text loss, reusing
:meth:`extract_features` and extending :attr:`REFERENCE_KEY_MAP`.
"""

from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from ..backbones.clip_backbone import build_clip_image_encoder
from ..heads.bnneck import BNNeck
from ..losses import build_losses
from .baseline import Baseline
from .build import META_ARCH_REGISTRY

__all__ = ["CLIPBaseline"]


@META_ARCH_REGISTRY.register()
class CLIPBaseline(Baseline):
    """CLIP image encoder (``MODEL.BACKBONE.CLIP.*``) + BNNeck on ``feat`` and on ``feat_proj``.

    Reuses :class:`Baseline`'s device handling and loss application; only the model body
    differs (one backbone, two necks, no pooling head).

    Attributes:
        backbone: :class:`~clipreid_plugin.modeling.backbones.clip_backbone.CLIPImageEncoder`.
        neck: BNNeck on ``feat`` (the reference's ``bottleneck`` + ``classifier``).
        neck_proj: BNNeck on ``feat_proj`` (``bottleneck_proj`` + ``classifier_proj``).
        REFERENCE_KEY_MAP: ordered (reference prefix, our prefix) pairs used to convert the
            reference implementation's checkpoints; the first matching prefix wins.

    Args:
        cfg: the config (``MODEL.HEADS.NUM_CLASSES`` > 0 for training).
        clip_model: an already loaded CLIP model (subclasses reuse its text tower); loaded
            from the config when None.
    """

    REFERENCE_KEY_MAP: List[Tuple[str, str]] = [
        ("image_encoder.", "backbone.visual."),
        ("cv_embed", "backbone.cv_embed"),
        ("bottleneck_proj.", "neck_proj.bn."),
        ("bottleneck.", "neck.bn."),
        ("classifier_proj.", "neck_proj.classifier."),
        ("classifier.", "neck.classifier."),
    ]

    def __init__(self, cfg, clip_model: Optional[nn.Module] = None):
        # Baseline.__init__ builds a pooling head this model does not have: initialise nn.Module
        # directly and set up the attributes Baseline's methods use (``losses``).
        nn.Module.__init__(self)
        self.backbone = build_clip_image_encoder(cfg, clip_model)
        num_classes = cfg.MODEL.HEADS.NUM_CLASSES
        std = cfg.MODEL.HEADS.CLS_INIT_STD
        self.neck = BNNeck(self.backbone.in_planes, num_classes, std)
        self.neck_proj = BNNeck(self.backbone.in_planes_proj, num_classes, std)
        self.losses = build_losses(cfg)
        self.neck_feat = cfg.MODEL.HEADS.NECK_FEAT
        if self.neck_feat not in ("before", "after"):
            raise ValueError(f"MODEL.HEADS.NECK_FEAT must be 'before' or 'after', got {self.neck_feat!r}.")

    def extract_features(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None,
                         viewids: Optional[torch.Tensor] = None) -> Dict[str, object]:
        """Run the encoder and both necks; everything a loss or a subclass may need.

        Args:
            images: (B, 3, H, W) on the model's device.
            camids, viewids: (B,) ids, used only when SIE is on.

        Returns:
            dict with ``feat_last``, ``feat``, ``feat_proj`` (pre-BN), ``bn_feat``,
            ``bn_feat_proj`` (post-BN), and in training mode ``cls_outputs`` [logits of
            ``neck``, logits of ``neck_proj``] and ``triplet_features`` [feat_last, feat,
            feat_proj] (the keys LOSS_REGISTRY losses read).
        """
        out: Dict[str, object] = dict(self.backbone(images, camids, viewids))
        out["bn_feat"], logits = self.neck(out["feat"])
        out["bn_feat_proj"], logits_proj = self.neck_proj(out["feat_proj"])
        if self.training:
            out["cls_outputs"] = [logits, logits_proj]
            out["triplet_features"] = [out["feat_last"], out["feat"], out["feat_proj"]]
        return out

    def embedding(self, out: Dict[str, object]) -> torch.Tensor:
        """The eval embedding from :meth:`extract_features`'s dict (per ``MODEL.HEADS.NECK_FEAT``)."""
        if self.neck_feat == "after":
            return torch.cat([out["bn_feat"], out["bn_feat_proj"]], dim=1)
        return torch.cat([out["feat"], out["feat_proj"]], dim=1)

    def forward(self, batch: Dict[str, torch.Tensor]) -> Union[Dict[str, torch.Tensor], torch.Tensor]:
        """Args: batch with ``images`` (B, 3, H, W) normalised, ``targets`` (training), and
        ``camids`` / ``viewids`` (used with SIE).

        Returns:
            Training: ``{"loss_<name>": scalar}`` from every configured loss, already weighted.
            Eval: (B, in_planes + in_planes_proj) embedding.
        """
        device = self.device
        images = batch["images"].to(device, non_blocking=True)
        # ids only reach an encoder with SIE (subclasses may use backbones without the attributes)
        camids = batch.get("camids") if getattr(self.backbone, "sie_camera", False) else None
        viewids = batch.get("viewids") if getattr(self.backbone, "sie_view", False) else None
        out = self.extract_features(images, camids, viewids)
        if not self.training:
            return self.embedding(out)
        targets = batch["targets"].to(device, non_blocking=True)
        return self.compute_losses(out, targets)
