"""Training engine: loop, hooks (and the hook registry), default trainer, distributed launch."""

from .train_loop import HookBase, OptimizationStep, SimpleTrainer, TrainerBase, check_finite
from .hooks import (HOOK_REGISTRY, EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter,
                    PhaseHook, build_hook)
from .launch import launch
from .defaults import (DefaultTrainer, default_argument_parser, default_setup, describe_model, run_training,
                       setup_cfg)

__all__ = ["HookBase", "OptimizationStep", "SimpleTrainer", "TrainerBase", "check_finite", "HOOK_REGISTRY",
           "EvalHook", "IterationTimer", "LRScheduler", "PeriodicCheckpointer", "PeriodicWriter", "PhaseHook",
           "build_hook", "launch", "DefaultTrainer", "default_argument_parser", "default_setup", "describe_model",
           "run_training", "setup_cfg"]
