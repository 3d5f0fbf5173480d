"""Solver: optimizers (param groups, bias / heads LR factors, fast-reid's freeze and clipping) and warmup LR schedules."""

from .clipping import add_gradient_clipping, clip_group_gradients
from .freeze import add_group_freeze, freeze_steps_left
from .lr_scheduler import (
    LR_SCHEDULER_REGISTRY,
    CosineAnnealingLR,
    MultiStepLR,
    fastreid_cosine_lr,
    fastreid_cosine_t_max,
    fastreid_epoch_steps,
    fastreid_multistep_lr,
    WarmupCosineLR,
    WarmupMultiStepLR,
    build_lr_scheduler,
    warmup_cosine_lr,
    warmup_multiplier,
    warmup_multistep_lr,
)
from .optimizer import OPTIMIZER_REGISTRY, build_optimizer, build_param_groups, norm_parameter_names

__all__ = [
    "LR_SCHEDULER_REGISTRY", "WarmupCosineLR", "WarmupMultiStepLR", "build_lr_scheduler",
    "warmup_cosine_lr", "warmup_multiplier", "warmup_multistep_lr",
    "OPTIMIZER_REGISTRY", "build_optimizer", "build_param_groups", "norm_parameter_names",
    "MultiStepLR", "CosineAnnealingLR", "fastreid_epoch_steps", "fastreid_cosine_t_max", "fastreid_multistep_lr",
    "fastreid_cosine_lr", "add_group_freeze", "freeze_steps_left", "add_gradient_clipping", "clip_group_gradients",
]
