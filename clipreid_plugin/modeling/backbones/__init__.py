"""Backbones, registered by builder-function name in BACKBONE_REGISTRY (importing registers them).

Every backbone follows one contract (:mod:`.base`): it returns a :class:`BackboneOutput`.
"""

from .base import Backbone, BackboneOutput, check_ids_in_range, eval_mode, global_pool
from .build import BACKBONE_REGISTRY, build_backbone, check_backbone_contract, check_backbone_output
from .osnet import OSNetBackbone, build_osnet_backbone
from .pos_embed import patch_grid, resize_pos_embed
from .resnest import ResNeStBackbone, build_resnest_backbone
from .resnet import ResNetBackbone, build_resnet_backbone
from .vit import ViTBackbone, build_vit_backbone

__all__ = ["BACKBONE_REGISTRY", "build_backbone", "check_backbone_contract", "check_backbone_output", "Backbone", "BackboneOutput",
           "check_ids_in_range", "eval_mode", "global_pool", "patch_grid", "resize_pos_embed", "ResNetBackbone", "build_resnet_backbone",
           "ResNeStBackbone", "build_resnest_backbone",
           "ViTBackbone", "build_vit_backbone", "OSNetBackbone", "build_osnet_backbone"]
