"""Losses, registered by class name in LOSS_REGISTRY."""

from .build import LOSS_REGISTRY, build_losses
from .cross_entropy import CrossEntropyLoss, cross_entropy_label_smooth
from .triplet import TripletLoss, batch_hard_triplet_loss, euclidean_dist
from .image_text import ImageTextCrossEntropyLoss, ImageTextSupConLoss, supcon_loss

__all__ = ["LOSS_REGISTRY", "build_losses", "CrossEntropyLoss", "cross_entropy_label_smooth",
           "TripletLoss", "batch_hard_triplet_loss", "euclidean_dist", "ImageTextCrossEntropyLoss",
           "ImageTextSupConLoss", "supcon_loss"]
