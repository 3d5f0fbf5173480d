"""Meta-architectures, registered by class name in META_ARCH_REGISTRY (importing registers them)."""

from .build import META_ARCH_REGISTRY, build_model, weights_replace_pretrained
from .baseline import Baseline, apply_losses, backbone_inputs
from .mgn import MGN

__all__ = ["META_ARCH_REGISTRY", "build_model", "weights_replace_pretrained", "Baseline", "apply_losses",
           "backbone_inputs", "MGN"]
