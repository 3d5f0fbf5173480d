"""Heads, registered by class name in HEAD_REGISTRY."""

from .build import HEAD_REGISTRY, build_head, build_heads
from .bnneck import BNNeck
from .cls_layers import CLS_LAYERS, build_cls_layer
from .embedding_head import EmbeddingHead
from .pooling import POOL_ALIASES, POOL_LAYERS, build_pool_layer

__all__ = ["HEAD_REGISTRY", "build_head", "build_heads", "BNNeck", "EmbeddingHead", "CLS_LAYERS", "build_cls_layer",
           "POOL_LAYERS", "POOL_ALIASES", "build_pool_layer"]
