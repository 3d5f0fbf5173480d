"""Solver: optimizers (one param group per tensor, bias LR factor) and warmup LR schedules."""

from .lr_scheduler import (
    LR_SCHEDULER_REGISTRY,
    WarmupCosineLR,
    WarmupMultiStepLR,
    build_lr_scheduler,
    warmup_cosine_lr,
    warmup_multiplier,
    warmup_multistep_lr,
)
from .optimizer import OPTIMIZER_REGISTRY, build_optimizer, build_param_groups

__all__ = [
    "LR_SCHEDULER_REGISTRY", "WarmupCosineLR", "WarmupMultiStepLR", "build_lr_scheduler",
    "warmup_cosine_lr", "warmup_multiplier", "warmup_multistep_lr",
    "OPTIMIZER_REGISTRY", "build_optimizer", "build_param_groups",
]
