"""Identity (classification) loss with label smoothing, as in bag-of-tricks and CLIP-ReID."""

import torch
import torch.nn.functional as F
from torch import nn

from .build import LOSS_REGISTRY
from .precision import full_precision

__all__ = ["cross_entropy_label_smooth", "CrossEntropyLoss"]


def cross_entropy_label_smooth(logits: torch.Tensor, targets: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Cross-entropy against smoothed targets ``(1 - eps) * onehot + eps / C``, batch mean.

    Args:
        logits: (B, C) class scores.
        targets: (B,) integer labels.
        epsilon: smoothing; 0 gives plain cross-entropy.

    Returns:
        Scalar loss, in fp32 (or wider) even for half-precision logits or under autocast.
    """
    with full_precision(logits) as (logits,):
        log_probs = F.log_softmax(logits, dim=1)
        onehot = torch.zeros_like(log_probs).scatter_(1, targets.unsqueeze(1), 1)
        smoothed = (1 - epsilon) * onehot + epsilon / logits.size(1)
        return (-smoothed * log_probs).mean(0).sum()


@LOSS_REGISTRY.register()
class CrossEntropyLoss(nn.Module):
    """Sum of label-smoothed CE over every classifier output, times ``MODEL.LOSSES.CE.SCALE``.

    Reads ``outputs["cls_outputs"]``: a list of (B, C) logits (CLIP-ReID has two classifiers).
    """

    def __init__(self, cfg):
        super().__init__()
        self.epsilon = cfg.MODEL.LOSSES.CE.EPSILON
        self.scale = cfg.MODEL.LOSSES.CE.SCALE

    def forward(self, outputs, targets):
        """Returns: {"loss_cls": scale * sum_i CE(cls_outputs[i], targets)}."""
        total = sum(cross_entropy_label_smooth(z, targets, self.epsilon) for z in outputs["cls_outputs"])
        return {"loss_cls": total * self.scale}
