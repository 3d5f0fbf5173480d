"""Image-text losses of CLIP-ReID.

* Stage 1 (prompt learning): supervised contrastive loss in both directions between the
  cached image features and the text features of the batch's identities
  (:func:`supcon_loss`, :class:`ImageTextSupConLoss`).
* Stage 2 (image encoder training): cross-entropy of the image-to-text logits against the
  frozen text features of every identity (:class:`ImageTextCrossEntropyLoss`).

CLIP-ReID uses raw dot products: no L2 normalisation and no learned logit scale (spec 3.3, 3.5).
"""

import torch
import torch.nn.functional as F
from torch import nn

from clipreid_plugin.config import configurable
from clipreid_plugin.modeling import LOSS_REGISTRY, cross_entropy_label_smooth, full_precision
from clipreid_plugin.utils.errors import ConfigError

__all__ = ["supcon_loss", "ImageTextSupConLoss", "ImageTextCrossEntropyLoss"]


def supcon_loss(anchors: torch.Tensor, candidates: torch.Tensor, anchor_labels: torch.Tensor,
                candidate_labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) of anchors against candidates.

    ``s_ij = a_i . b_j / temperature``; ``log p_ij = log_softmax_j(s_ij)``; the loss is
    ``-mean_i(mean over positives j of log p_ij)`` where j is a positive of i when their labels
    are equal. Duplicated candidates (one identity appearing several times in the batch) all
    stay in the denominator, as in the reference.

    Args:
        anchors: (n, d) features.
        candidates: (m, d) features.
        anchor_labels: (n,) identity labels of the anchors.
        candidate_labels: (m,) identity labels of the candidates.
        temperature: divides the dot products (1.0 in CLIP-ReID).

    Returns:
        Scalar loss, computed in fp32 (or wider) whatever the input precision and autocast state.

    Raises:
        ValueError: an anchor has no candidate with its label (its term would be NaN).
    """
    positives = anchor_labels.view(-1, 1) == candidate_labels.view(1, -1)
    # With one label tensor on both sides (stage 1: image and text features of the same
    # identities) every anchor is a positive of itself, so the check is skipped: it reads the
    # device (a host sync) and stage 1 calls this twice per step. Other label pairs are checked:
    # without it an anchor without a positive would silently give a NaN loss.
    if anchor_labels is not candidate_labels and not bool(positives.any(1).all()):
        raise ValueError(
            "supcon_loss: some anchors have no candidate with the same label; stage 1 must "
            "pair every image feature with the text feature of its own identity."
        )
    with full_precision(anchors, candidates) as (anchors, candidates):
        logits = anchors @ candidates.t() / temperature
        # log_softmax subtracts the row maximum internally: the reference's explicit (detached)
        # row-max subtraction is the same computation.
        log_prob = F.log_softmax(logits, dim=1)
        positives = positives.to(log_prob.dtype)
        return -((positives * log_prob).sum(1) / positives.sum(1)).mean()


@LOSS_REGISTRY.register()
class ImageTextSupConLoss(nn.Module):
    """Stage-1 loss: ``SupCon(image -> text) + SupCon(text -> image)``, each times
    ``CLIPREID.LOSSES.SUPCON.SCALE`` (temperature ``CLIPREID.LOSSES.SUPCON.TEMPERATURE``).

    Reads ``outputs["image_features"]`` (B, D) and ``outputs["text_features"]`` (B, D), both
    belonging to the identities ``targets`` (the same labels on both sides).

    Args:
        temperature: SupCon temperature.
        scale: weight of each direction.
    """

    @configurable
    def __init__(self, *, temperature: float = 1.0, scale: float = 1.0):
        super().__init__()
        self.temperature = temperature
        self.scale = scale

    @classmethod
    def from_config(cls, cfg):
        return {"temperature": cfg.CLIPREID.LOSSES.SUPCON.TEMPERATURE, "scale": cfg.CLIPREID.LOSSES.SUPCON.SCALE}

    def forward(self, outputs, targets):
        """Returns: {"loss_supcon_i2t": ..., "loss_supcon_t2i": ...} (already scaled)."""
        img, txt = outputs["image_features"], outputs["text_features"]
        if not img.shape[0] == txt.shape[0] == targets.shape[0]:
            raise ValueError(f"ImageTextSupConLoss: {img.shape[0]} image features, {txt.shape[0]} text features and "
                             f"{targets.shape[0]} labels; stage 1 pairs each image feature with the text feature "
                             f"of its own identity (one label per pair).")
        i2t = supcon_loss(img, txt, targets, targets, self.temperature)
        t2i = supcon_loss(txt, img, targets, targets, self.temperature)
        return {"loss_supcon_i2t": i2t * self.scale, "loss_supcon_t2i": t2i * self.scale}


@LOSS_REGISTRY.register()
class ImageTextCrossEntropyLoss(nn.Module):
    """Stage-2 loss L_i2tce: label-smoothed cross-entropy of ``outputs["i2t_logits"]``
    (B, C) = projected image features @ frozen text features of all C identities ``.T``.

    Config: ``CLIPREID.LOSSES.I2T.EPSILON`` (label smoothing, 0 = plain CE) and
    ``CLIPREID.LOSSES.I2T.SCALE`` (weight).

    Args:
        epsilon: label smoothing (0 = plain cross-entropy).
        scale: loss weight.
    """

    @configurable
    def __init__(self, *, epsilon: float = 0.1, scale: float = 1.0):
        super().__init__()
        self.epsilon = epsilon
        self.scale = scale

    @classmethod
    def from_config(cls, cfg):
        return {"epsilon": cfg.CLIPREID.LOSSES.I2T.EPSILON, "scale": cfg.CLIPREID.LOSSES.I2T.SCALE}

    def forward(self, outputs, targets):
        """Returns: {"loss_i2t": scale * CE_ls(i2t_logits, targets)}."""
        if "i2t_logits" not in outputs:
            raise ConfigError(
                "ImageTextCrossEntropyLoss needs outputs['i2t_logits'], which CLIPReID produces "
                "only once the text features of every identity are set (after stage 1, or "
                "loaded from a checkpoint). Run stage 1 (CLIPREID.PHASES 'both'), use "
                "MODEL.META_ARCHITECTURE CLIPReID, or remove 'ImageTextCrossEntropyLoss' from "
                "MODEL.LOSSES.NAMES."
            )
        loss = cross_entropy_label_smooth(outputs["i2t_logits"], targets, self.epsilon)
        return {"loss_i2t": loss * self.scale}
