"""Classifier layers of a feature head (``MODEL.HEADS.CLS_LAYER``), with fast-reid's semantics.

The head computes raw logits and hands them to a layer here, which turns them into what the
cross-entropy sees (``cls_outputs``); ``pred_class_logits`` = raw logits x ``scale`` is logged
for accuracy only. For ``Linear`` the raw logits are ``feat @ W.T``; for the margin layers they
are cosines ``normalize(feat) @ normalize(W).T`` (:attr:`ClassifierLayer.cosine`).

==================  ======================================================================
``Linear``          ``s * z``
``CosSoftmax``      CosFace (Wang et al.): ``s * (z - m [target])``
``ArcSoftmax``      ArcFace (Deng et al.): ``s * cos(acos(z) + m [target])``
``CircleSoftmax``   Circle loss (Sun et al.) logits: target ``s * a_p (z - (1 - m))``, others
                    ``s * a_n (z - m)``, with ``a_p = max(1 + m - z, 0)``, ``a_n = max(z + m, 0)``
                    taken as constants (no gradient through them)
==================  ======================================================================

``s`` is ``MODEL.HEADS.SCALE``, ``m`` ``MODEL.HEADS.MARGIN``. A target of -1 (a sample whose class
the layer does not hold) gets no margin (CircleSoftmax: the non-target form in every column).
"""

from typing import Dict, Type

import torch
from torch import nn

from clipreid_plugin.utils.errors import ConfigError

__all__ = ["CLS_LAYERS", "build_cls_layer", "ClassifierLayer", "Linear", "CosSoftmax", "ArcSoftmax",
           "CircleSoftmax"]


def _target_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, C) bool: True at each row's target column (no column for a target of -1)."""
    classes = torch.arange(logits.size(1), device=logits.device)
    return classes.unsqueeze(0) == targets.unsqueeze(1)


class ClassifierLayer(nn.Module):
    """Base: no parameters; maps raw logits (B, C) and targets (B,) to the logits CE sees.

    Args:
        scale: the multiplier ``s``.
        margin: the margin ``m`` (unused by ``Linear``).
    """

    cosine = True  # raw logits are cosines of the normalised feature and class weights

    def __init__(self, scale: float = 1.0, margin: float = 0.0):
        super().__init__()
        self.s, self.m = float(scale), float(margin)

    def extra_repr(self) -> str:
        return f"scale={self.s}, margin={self.m}"


class Linear(ClassifierLayer):
    """``s * z`` on the plain (unnormalised) logits."""

    cosine = False

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return logits * self.s


class CosSoftmax(ClassifierLayer):
    """Additive cosine margin: ``s * (cos - m)`` at the target."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.where(_target_mask(logits, targets), logits - self.m, logits) * self.s


class ArcSoftmax(ClassifierLayer):
    """Additive angular margin: ``s * cos(theta + m)`` at the target, ``s * cos(theta)`` elsewhere.

    Every column goes through acos/cos (as fast-reid does), so non-target columns carry the
    rounding of that round trip.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        theta = logits.acos()
        theta = torch.where(_target_mask(logits, targets), theta + self.m, theta)
        return theta.cos() * self.s


class CircleSoftmax(ClassifierLayer):
    """Circle-loss logits with self-paced weights (constants) and margins ``1 - m`` / ``m``."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        alpha_p = (-logits.detach() + 1 + self.m).clamp(min=0.0)  # fast-reid's order of operations
        alpha_n = (logits.detach() + self.m).clamp(min=0.0)
        logits_p = alpha_p * (logits - (1 - self.m))
        logits_n = alpha_n * (logits - self.m)
        return torch.where(_target_mask(logits, targets), logits_p, logits_n) * self.s


CLS_LAYERS: Dict[str, Type[ClassifierLayer]] = {
    "Linear": Linear, "CosSoftmax": CosSoftmax, "ArcSoftmax": ArcSoftmax, "CircleSoftmax": CircleSoftmax}


def build_cls_layer(name: str, scale: float, margin: float) -> ClassifierLayer:
    """The classifier layer ``MODEL.HEADS.CLS_LAYER`` names.

    Raises:
        ConfigError: an unknown name.
    """
    if name not in CLS_LAYERS:
        raise ConfigError(f"MODEL.HEADS.CLS_LAYER {name!r} is not a classifier layer; valid: "
                          f"{', '.join(CLS_LAYERS)}.")
    return CLS_LAYERS[name](scale, margin)
