"""Meta-architectures, registered by class name in META_ARCH_REGISTRY (importing registers them)."""

from .build import META_ARCH_REGISTRY, build_model
from .baseline import Baseline
from .clip_baseline import CLIPBaseline
from .clipreid import CLIPReID

__all__ = ["META_ARCH_REGISTRY", "build_model", "Baseline", "CLIPBaseline", "CLIPReID"]
