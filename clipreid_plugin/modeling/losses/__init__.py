"""Losses, registered by class name in LOSS_REGISTRY."""

from .build import LOSS_REGISTRY, build_losses
from . import loss_weights  # noqa: F401  registers the check that listed losses have a weight
from .cross_entropy import CrossEntropyLoss, cross_entropy_label_smooth
from .precision import at_least_fp32, full_precision
from .triplet import TripletLoss, batch_hard_triplet_loss, euclidean_dist

__all__ = ["LOSS_REGISTRY", "build_losses", "CrossEntropyLoss", "cross_entropy_label_smooth",
           "TripletLoss", "batch_hard_triplet_loss", "euclidean_dist", "at_least_fp32", "full_precision"]
