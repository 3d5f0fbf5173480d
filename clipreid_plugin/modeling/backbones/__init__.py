"""Backbones, registered by builder-function name in BACKBONE_REGISTRY (importing registers them).

Every backbone follows one contract (:mod:`.base`): it returns a :class:`BackboneOutput`.
"""

from .base import Backbone, BackboneOutput, check_ids_in_range, eval_mode, global_pool
from .build import BACKBONE_REGISTRY, build_backbone, check_backbone_contract, check_backbone_output
from .pos_embed import patch_grid, resize_pos_embed
from .resnet import ResNetBackbone, build_resnet_backbone
from .vit import ViTBackbone, build_vit_backbone

__all__ = ["BACKBONE_REGISTRY", "build_backbone", "check_backbone_contract", "check_backbone_output", "Backbone", "BackboneOutput",
           "check_ids_in_range", "eval_mode", "global_pool", "patch_grid", "resize_pos_embed", "ResNetBackbone", "build_resnet_backbone",
           "ViTBackbone", "build_vit_backbone"]
