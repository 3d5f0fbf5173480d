"""Training engine: loop, hooks (and the hook registry), default trainer, distributed launch."""

from .protocol import TrainerProtocol
from .train_loop import HookBase, LossMonitor, OptimizationStep, SimpleTrainer, TrainerBase, check_weights_finite
from .hooks import (HOOK_REGISTRY, EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter,
                    PhaseHook, build_hook)
from .launch import launch
from .validate import validate_config
from .defaults import (DefaultTrainer, build_evaluation_model, default_argument_parser, default_setup, describe_model,
                       model_info, run_training, setup_cfg, write_run_files)

__all__ = ["TrainerProtocol", "HookBase", "LossMonitor", "OptimizationStep", "SimpleTrainer", "TrainerBase", "check_weights_finite",
           "HOOK_REGISTRY",
           "EvalHook", "IterationTimer", "LRScheduler", "PeriodicCheckpointer", "PeriodicWriter", "PhaseHook",
           "build_hook", "launch", "DefaultTrainer", "build_evaluation_model", "default_argument_parser", "default_setup",
           "describe_model", "model_info", "write_run_files",
           "run_training", "setup_cfg", "validate_config"]
