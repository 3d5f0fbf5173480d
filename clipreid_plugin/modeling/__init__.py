"""Models: backbones, heads, losses and meta-architectures, each chosen by registry name.

This is the face a plugin imports models' seams from: the registries, the backbone contract
(:class:`BackboneOutput`, :class:`Backbone`), and the helpers the host's own components share.
"""

from .backbones import (BACKBONE_REGISTRY, Backbone, BackboneOutput, build_backbone, check_backbone_output,
                        check_ids_in_range, eval_mode, global_pool, patch_grid, resize_pos_embed)
from .heads import HEAD_REGISTRY, BNNeck, build_head, build_heads
from .losses import LOSS_REGISTRY, build_losses, cross_entropy_label_smooth, full_precision
from .meta_arch import META_ARCH_REGISTRY, apply_losses, backbone_inputs, build_model, weights_replace_pretrained
from . import fastreid_checkpoint  # noqa: F401  registers the fast-reid checkpoint converter
from . import legacy_checkpoint  # noqa: F401  registers the converter of this toolkit's earlier head names
from . import torchreid_checkpoint  # noqa: F401  registers the torchreid OSNet checkpoint converter

__all__ = [
    "BACKBONE_REGISTRY", "build_backbone", "Backbone", "BackboneOutput", "check_backbone_output", "check_ids_in_range",
    "eval_mode", "global_pool", "patch_grid", "resize_pos_embed", "HEAD_REGISTRY", "build_heads", "build_head", "BNNeck",
    "LOSS_REGISTRY", "build_losses", "cross_entropy_label_smooth", "full_precision",
    "META_ARCH_REGISTRY", "build_model", "apply_losses", "backbone_inputs", "weights_replace_pretrained",
]
