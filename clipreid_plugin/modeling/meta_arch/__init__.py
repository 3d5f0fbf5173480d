"""Meta-architectures, registered by class name in META_ARCH_REGISTRY (importing registers them)."""

from .build import META_ARCH_REGISTRY, build_model
from .baseline import Baseline, apply_losses, backbone_inputs

__all__ = ["META_ARCH_REGISTRY", "build_model", "Baseline", "apply_losses", "backbone_inputs"]
