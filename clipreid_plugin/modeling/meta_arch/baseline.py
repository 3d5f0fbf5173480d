"""Baseline: backbone + head + losses, the bag-of-tricks ReID model (Luo et al. 2019)."""

from typing import Dict, Union

import torch
from torch import nn

from ..backbones import build_backbone
from ..heads import build_heads
from ..losses import build_losses
from .build import META_ARCH_REGISTRY

__all__ = ["Baseline"]


@META_ARCH_REGISTRY.register()
class Baseline(nn.Module):
    """Any registered backbone, head and losses, chosen by the config.

    ``MODEL.BACKBONE.NAME`` builds the backbone (its ``out_features`` sizes the head),
    ``MODEL.HEADS.NAME`` the head (``EmbeddingHead``: pooling + BNNeck + classifier) and
    ``MODEL.LOSSES.NAMES`` the losses, each of which reads the head's training outputs.

    Args:
        cfg: the config (``MODEL.HEADS.NUM_CLASSES`` > 0 for training).
    """

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.heads = build_heads(cfg, self.backbone.out_features)
        self.losses = build_losses(cfg)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (inputs are moved there)."""
        return next(self.parameters()).device

    def forward(self, batch: Dict[str, torch.Tensor]) -> Union[Dict[str, torch.Tensor], torch.Tensor]:
        """Args: batch with ``images`` (B, 3, H, W) normalised; ``targets`` (B,) for training;
            ``camids`` (B,) when the backbone has a camera embedding (``sie_camera``).

        Returns:
            Training: ``{"loss_<name>": scalar}`` from every loss, already weighted.
            Eval: the head's embedding (B, D).
        """
        images = batch["images"].to(self.device, non_blocking=True)
        if getattr(self.backbone, "sie_camera", False):  # a backbone with a camera embedding (ViT + SIE)
            outputs = self.heads(self.backbone(images, batch["camids"]))
        else:
            outputs = self.heads(self.backbone(images))
        if not self.training:
            return outputs
        targets = batch["targets"].to(self.device, non_blocking=True)
        return self.compute_losses(outputs, targets)

    def compute_losses(self, outputs: Dict[str, object], targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Apply every configured loss to the head's training outputs.

        Args:
            outputs: the head's training dict (``cls_outputs``, ``triplet_features``, ...).
            targets: (B,) identity labels 0..C-1.

        Returns:
            The union of the losses' ``{"loss_<name>": scalar}`` dicts.
        """
        if any(z is None for z in outputs.get("cls_outputs", [])):
            raise ValueError("The head has no classifier: MODEL.HEADS.NUM_CLASSES is 0. Set it to the number of "
                             "training identities (the trainer fills it from the training set).")
        losses: Dict[str, torch.Tensor] = {}
        for loss in self.losses:
            for name, value in loss(outputs, targets).items():
                if name in losses:
                    raise ValueError(f"Two losses in MODEL.LOSSES.NAMES both return {name!r}; list each loss once.")
                losses[name] = value
        return losses
