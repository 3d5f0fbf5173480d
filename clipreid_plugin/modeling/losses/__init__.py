"""Losses, registered by class name in LOSS_REGISTRY."""

from .build import LOSS_REGISTRY, build_losses
from .circle import CircleLoss, pairwise_circle_loss
from .cosface import Cosface, pairwise_cosface_loss
from .cross_entropy import CrossEntropyLoss, cross_entropy_label_smooth, fastreid_cross_entropy
from .precision import at_least_fp32, full_precision
from .triplet import TripletLoss, cosine_dist, euclidean_dist, triplet_loss

__all__ = ["LOSS_REGISTRY", "build_losses", "CrossEntropyLoss", "cross_entropy_label_smooth", "fastreid_cross_entropy",
           "TripletLoss", "triplet_loss", "euclidean_dist", "cosine_dist", "CircleLoss", "pairwise_circle_loss",
           "Cosface", "pairwise_cosface_loss", "at_least_fp32", "full_precision"]
