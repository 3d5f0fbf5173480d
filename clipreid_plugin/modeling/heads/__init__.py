"""Heads, registered by class name in HEAD_REGISTRY."""

from .build import HEAD_REGISTRY, build_heads
from .bnneck import BNNeck, EmbeddingHead
from .prompt_learner import PromptLearnerHead

__all__ = ["HEAD_REGISTRY", "build_heads", "BNNeck", "EmbeddingHead", "PromptLearnerHead"]
