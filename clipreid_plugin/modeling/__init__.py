"""Models: backbones, heads, losses and meta-architectures, each chosen by registry name."""

from .backbones import BACKBONE_REGISTRY, build_backbone
from .heads import HEAD_REGISTRY, build_heads
from .losses import LOSS_REGISTRY, build_losses
from .meta_arch import META_ARCH_REGISTRY, build_model
from . import fastreid_checkpoint  # noqa: F401  registers the fast-reid checkpoint converter

__all__ = [
    "BACKBONE_REGISTRY", "build_backbone", "HEAD_REGISTRY", "build_heads",
    "LOSS_REGISTRY", "build_losses", "META_ARCH_REGISTRY", "build_model",
]
