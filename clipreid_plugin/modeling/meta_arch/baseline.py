"""Baseline: backbone + head + losses, the bag-of-tricks ReID model (Luo et al. 2019)."""

from typing import Dict, Union

import torch
from torch import nn

from clipreid_plugin.utils.errors import ConfigError
from ..backbones import build_backbone, check_backbone_output
from ..heads import build_heads
from ..losses import build_losses
from .build import META_ARCH_REGISTRY

__all__ = ["Baseline", "backbone_inputs", "apply_losses"]


def backbone_inputs(backbone: nn.Module, batch: Dict[str, torch.Tensor], device: torch.device):
    """The images and, for a backbone that reads them, the camera / view ids of a batch.

    Args:
        backbone: the backbone (its ``uses_camids`` / ``uses_viewids`` decide).
        batch: the batch dict (``images``, ``camids``, ``viewids``).
        device: where the images go.

    Returns:
        (images, camids or None, viewids or None).

    Raises:
        KeyError: the backbone needs ids the batch does not have.
    """
    memory_format = getattr(backbone, "input_memory_format", torch.preserve_format)
    images = batch["images"].to(device, non_blocking=True, memory_format=memory_format)
    ids = []
    for key, flag in (("camids", "uses_camids"), ("viewids", "uses_viewids")):
        if not getattr(backbone, flag, False):
            ids.append(None)
        elif key not in batch:
            raise KeyError(f"{type(backbone).__name__} uses {key} (side information), but the batch has none.")
        else:
            ids.append(batch[key])
    return images, ids[0], ids[1]


def apply_losses(losses: nn.ModuleList, outputs: Dict[str, object], targets: torch.Tensor,
                 names_key: str = "MODEL.LOSSES.NAMES") -> Dict[str, torch.Tensor]:
    """Apply every loss module to a meta-architecture's training outputs.

    Args:
        losses: the loss modules (``build_losses``).
        outputs: the training dict the losses read (``cls_outputs``, ``triplet_features``, ...).
        targets: (B,) identity labels 0..C-1.
        names_key: the config key that named ``losses`` (for the message below).

    Returns:
        The union of the losses' ``{"loss_<name>": scalar}`` dicts.

    Raises:
        ConfigError (a ValueError): a classifier in ``cls_outputs`` is None (built with
            ``MODEL.HEADS.NUM_CLASSES`` 0), or two losses return the same name.
    """
    if any(z is None for z in outputs.get("cls_outputs", [])):
        raise ConfigError("The model has no classifier: MODEL.HEADS.NUM_CLASSES is 0. Set it to the number of "
                          "training identities (the trainer fills it from the training set).")
    result: Dict[str, torch.Tensor] = {}
    for loss in losses:
        for name, value in loss(outputs, targets).items():
            if name in result:
                raise ConfigError(f"Two losses in {names_key} both return {name!r}; list each loss once.")
            result[name] = value
    return result


@META_ARCH_REGISTRY.register()
class Baseline(nn.Module):
    """Any registered backbone, head and losses, chosen by the config.

    ``MODEL.BACKBONE.NAME`` builds the backbone (its ``out_features`` sizes the head),
    ``MODEL.HEADS.NAME`` the head (``EmbeddingHead``: pooling + BNNeck + classifier) and
    ``MODEL.LOSSES.NAMES`` the losses, each of which reads the head's training outputs. Needs
    only the backbone's ``feature``, so every registered backbone fits.

    Args:
        cfg: the config (``MODEL.HEADS.NUM_CLASSES`` > 0 for training).
    """

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.heads = build_heads(cfg, self.backbone.out_features)
        self.losses = build_losses(cfg, self.backbone.out_features)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (inputs are moved there)."""
        return next(self.parameters()).device

    def forward(self, batch: Dict[str, torch.Tensor]) -> Union[Dict[str, torch.Tensor], torch.Tensor]:
        """Args: batch with ``images`` (B, 3, H, W) normalised; ``targets`` (B,) for training;
            ``camids`` / ``viewids`` (B,) when the backbone reads them.

        Returns:
            Training: ``{"loss_<name>": scalar}`` from every loss, already weighted.
            Eval: the head's embedding (B, D).
        """
        if not self.training:
            return self.heads(self.backbone_feature(batch))
        outputs, targets = self.training_outputs(batch)
        return self.losses_of(outputs, targets)

    def backbone_feature(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns: the backbone's main feature of the batch's images."""
        images, camids, viewids = backbone_inputs(self.backbone, batch, self.device)
        return check_backbone_output(self.backbone(images, camids, viewids), self.backbone).feature

    def training_outputs(self, batch: Dict[str, torch.Tensor]):
        """The head's training outputs (what the losses read) and the targets, on the model's device.

        Returns:
            (outputs dict, targets (B,)).
        """
        targets = batch["targets"].to(self.device, non_blocking=True)
        return self.heads(self.backbone_feature(batch), targets=targets), targets

    def losses_of(self, outputs: Dict[str, object], targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Returns: the weighted losses of :meth:`training_outputs`' dict."""
        return apply_losses(self.losses, outputs, targets)
