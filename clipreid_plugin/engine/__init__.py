"""Training engine: loop, hooks, default trainer, distributed launch."""

from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase
from .hooks import EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter
from .launch import launch
from .defaults import (META_HOOK_BUILDERS, DefaultTrainer, default_argument_parser, default_setup,
                       setup_cfg)
from . import clipreid_stage1  # noqa: F401  (registers CLIP-ReID's stage-1 hook builder)
from .clipreid_stage1 import CLIPReIDStage1Hook

__all__ = ["AMPTrainer", "HookBase", "SimpleTrainer", "TrainerBase", "EvalHook", "IterationTimer",
           "LRScheduler", "PeriodicCheckpointer", "PeriodicWriter", "launch", "META_HOOK_BUILDERS",
           "DefaultTrainer", "default_argument_parser", "default_setup", "setup_cfg", "CLIPReIDStage1Hook"]
