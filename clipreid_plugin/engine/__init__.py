"""Training engine: one file a job.

* ``train_loop``: TrainerBase, SimpleTrainer, OptimizationStep, HookBase; ``protocol``: what a
  hook sees of the trainer (TrainerProtocol);
* ``hooks``: the standard hooks, HOOK_REGISTRY, PhaseHook; ``fixbase`` / ``layer_freeze``: the
  peers' freezing hooks;
* ``trainer``: DefaultTrainer (everything built from the config through the registries);
* ``command_line``: train_net's flags; ``run_setup``: the output-folder policy, logger and seeds;
  ``run_dir``: a run folder's files and lock;
* ``run``: run_training (train or evaluate, write results); ``evaluation_model``: the model of an
  evaluation from a checkpoint alone; ``validate``: the whole config checked before a run;
* ``launch``: one process per GPU, or CPU processes, or torchrun.
"""

from .protocol import TrainerProtocol
from .train_loop import HookBase, LossMonitor, OptimizationStep, SimpleTrainer, TrainerBase, check_weights_finite
from .hooks import (HOOK_REGISTRY, EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter,
                    PhaseHook, build_hook)
from .fixbase import FixBaseHook
from .launch import launch
from .validate import validate_config
from .command_line import default_argument_parser, setup_cfg
from .evaluation_model import build_evaluation_model
from .run import run_training
from .run_setup import default_setup
from .trainer import DefaultTrainer, describe_model, model_info, write_run_files

__all__ = ["TrainerProtocol", "HookBase", "LossMonitor", "OptimizationStep", "SimpleTrainer", "TrainerBase", "check_weights_finite",
           "HOOK_REGISTRY",
           "EvalHook", "IterationTimer", "LRScheduler", "PeriodicCheckpointer", "PeriodicWriter", "PhaseHook",
           "FixBaseHook",
           "build_hook", "launch", "DefaultTrainer", "build_evaluation_model", "default_argument_parser", "default_setup",
           "describe_model", "model_info", "write_run_files",
           "run_training", "setup_cfg", "validate_config"]
