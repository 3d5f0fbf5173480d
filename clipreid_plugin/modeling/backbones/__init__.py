"""Backbones, registered by builder-function name in BACKBONE_REGISTRY (importing registers them)."""

from .build import BACKBONE_REGISTRY, build_backbone
from .resnet import ResNetBackbone, build_resnet_backbone
from .clip_backbone import CLIPImageEncoder, build_clip_backbone
from .vit import ViTBackbone, build_vit_backbone

__all__ = ["BACKBONE_REGISTRY", "build_backbone", "ResNetBackbone", "build_resnet_backbone",
           "CLIPImageEncoder", "build_clip_backbone", "ViTBackbone", "build_vit_backbone"]
