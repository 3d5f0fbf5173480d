"""Identity (classification) loss with label smoothing, in two conventions.

* ``"uniform"`` (bag of tricks, TransReID, CLIP-ReID, torchreid): target ``(1 - eps) onehot +
  eps / C``, averaged over the batch (:func:`cross_entropy_label_smooth`).
* ``"fastreid"`` (fast-reid's ``cross_entropy_loss``): target ``1 - eps`` on the true class and
  ``eps / (C - 1)`` on each other class; the per-sample losses are summed and divided by the
  number of non-zero ones (not by the batch size); ``eps < 0`` selects adaptive smoothing,
  ``eps_i = alpha * p_i(target)`` with the probability taken as a constant
  (:func:`fastreid_cross_entropy`).

``MODEL.LOSSES.CE.CONVENTION`` chooses; the CLIP-ReID plugin's parity rests on ``"uniform"``,
the default.
"""

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clipreid_plugin.config import configurable
from clipreid_plugin.utils.errors import ConfigError

from .build import LOSS_REGISTRY
from .precision import full_precision

__all__ = ["cross_entropy_label_smooth", "fastreid_cross_entropy", "CE_CONVENTIONS", "CrossEntropyLoss"]

CE_CONVENTIONS = ("uniform", "fastreid")


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


def fastreid_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, epsilon: float,
                           alpha: float = 0.2) -> torch.Tensor:
    """fast-reid's label-smoothed cross-entropy (see the module docstring).

    Args:
        logits: (B, C) class scores (C >= 2).
        targets: (B,) integer labels.
        epsilon: smoothing of the true class (>= 0), or < 0 for adaptive smoothing.
        alpha: the adaptive smoothing's factor (used when ``epsilon < 0``).

    Returns:
        Scalar: sum of the per-sample losses / max(1, number of non-zero ones), fp32 or wider.
    """
    with full_precision(logits) as (logits,):
        num_classes = logits.size(1)
        if epsilon >= 0:
            smooth = epsilon
        else:
            with torch.no_grad():
                probs = F.softmax(logits, dim=1)
                smooth = alpha * probs.gather(1, targets.unsqueeze(1))
        log_probs = F.log_softmax(logits, dim=1)
        with torch.no_grad():
            soft_targets = torch.ones_like(log_probs) * (smooth / (num_classes - 1))
            soft_targets.scatter_(1, targets.unsqueeze(1), 1 - smooth)  # a float, or (B, 1) when adaptive
        per_sample = (-soft_targets * log_probs).sum(dim=1)
        non_zero = max(int(torch.count_nonzero(per_sample.detach())), 1)
        return per_sample.sum() / non_zero


@LOSS_REGISTRY.register()
class CrossEntropyLoss(nn.Module):
    """Sum of label-smoothed CE over every classifier output, times ``MODEL.LOSSES.CE.SCALE``.

    Reads ``outputs["cls_outputs"]``: a list of (B, C) logits (CLIP-ReID has two classifiers).
    Config: ``MODEL.LOSSES.CE.{EPSILON, ALPHA, CONVENTION, SCALE}``.

    Args:
        epsilon: label smoothing (``"fastreid"``: < 0 = adaptive).
        alpha: adaptive smoothing factor (``"fastreid"``, ``epsilon < 0``).
        convention: ``"uniform"`` or ``"fastreid"``.
        scale: the loss weight.
    """

    reads = "cls_outputs"  # the training-output list this loss consumes (MGN composes per head)

    @configurable
    def __init__(self, *, epsilon: float = 0.1, alpha: float = 0.2, convention: str = "uniform", scale: float = 1.0):
        super().__init__()
        if convention not in CE_CONVENTIONS:
            raise ConfigError(f"MODEL.LOSSES.CE.CONVENTION must be one of {', '.join(CE_CONVENTIONS)}, "
                              f"got {convention!r}.")
        if convention == "uniform" and epsilon < 0:
            raise ConfigError(f"MODEL.LOSSES.CE.EPSILON {epsilon} < 0 (adaptive smoothing) exists only with "
                              f"MODEL.LOSSES.CE.CONVENTION 'fastreid'.")
        self.epsilon, self.alpha, self.convention, self.scale = epsilon, alpha, convention, scale

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.LOSSES.CE
        return {"epsilon": c.EPSILON, "alpha": c.ALPHA, "convention": c.CONVENTION, "scale": c.SCALE}

    def forward(self, outputs, targets):
        """Returns: {"loss_cls": scale * sum_i CE(cls_outputs[i], targets)}."""
        logits: Sequence[torch.Tensor] = outputs["cls_outputs"]
        ce = fastreid_cross_entropy if self.convention == "fastreid" else cross_entropy_label_smooth
        extra = (self.alpha,) if self.convention == "fastreid" else ()
        total = sum(ce(z, targets, self.epsilon, *extra) for z in logits)
        return {"loss_cls": total * self.scale}
