"""Heads, registered by class name in HEAD_REGISTRY."""

from .build import HEAD_REGISTRY, build_head, build_heads
from .bnneck import BNNeck, EmbeddingHead
from .torchreid_head import TorchreidHead

__all__ = ["HEAD_REGISTRY", "build_head", "build_heads", "BNNeck", "EmbeddingHead", "TorchreidHead"]
