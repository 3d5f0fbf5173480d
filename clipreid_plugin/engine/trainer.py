"""The standard trainer (after detectron2's ``DefaultTrainer``).

:class:`DefaultTrainer` builds everything from the config through the registries (model,
optimizer, scheduler, loaders, evaluators) and registers the standard hooks. Each
``build_*`` is a classmethod a project can override; a method's extra phases are hooks
(:meth:`DefaultTrainer.build_hooks`), not edits to the loop. The files describing a run
(``config.yaml``, ``run_info.json``) are written here too.
"""

import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from clipreid_plugin.config import CfgNode, fill_data_dependent_keys
from clipreid_plugin.data import build_reid_test_loader, build_reid_train_loader
from clipreid_plugin.evaluation import build_evaluator, inference_on_dataset, results_table
from clipreid_plugin.modeling import build_model
from clipreid_plugin.solver import build_lr_scheduler, build_optimizer
from clipreid_plugin.utils import comm
from clipreid_plugin.utils.checkpoint import Checkpointer, load_model_weights, unwrap_model
from clipreid_plugin.utils.device import resolve_amp_dtype, resolve_dtype
from clipreid_plugin.utils.seeding import seed_all_rng
from clipreid_plugin.utils.errors import ConfigError, TrainingDivergedError
from clipreid_plugin.utils.events import CommonMetricPrinter, JSONWriter, TensorboardWriter
from clipreid_plugin.utils.file_io import atomic_write_text
from clipreid_plugin.utils.logger import log_once, setup_logger
from clipreid_plugin.utils.optional import extra_hint

from . import hooks
from .fixbase import FixBaseHook
from .layer_freeze import LayerFreeze
from .train_loop import SimpleTrainer, TrainerBase

__all__ = ["DefaultTrainer", "maybe_compile", "describe_model", "model_info", "write_run_files", "CONFIG_FILE", "RUN_INFO_FILE"]


def maybe_compile(model, cfg: CfgNode):
    """``torch.compile`` the (DDP-wrapped) model when ``MODEL.COMPILE`` names a mode.

    The wrapper keeps the eager module reachable (``unwrap_model``), so checkpoints and a
    training phase that calls the model's own methods (CLIP-ReID's stage 1) use it unchanged.

    Returns:
        The model to train and evaluate.
    """
    mode = cfg.MODEL.COMPILE
    if not mode:
        return model
    logging.getLogger(__name__).info(f"torch.compile: mode {mode!r}, backend {cfg.MODEL.COMPILE_BACKEND!r} (the "
                                     f"first steps and the first evaluation compile).")
    return torch.compile(model, mode=mode, backend=cfg.MODEL.COMPILE_BACKEND)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    # a fixed function of (seed, epoch, rank): an epoch's randomness does not depend on history,
    # so a run resumed at an epoch boundary continues exactly like an uninterrupted one
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2 ** 31)


class DefaultTrainer(TrainerBase):
    """Trainer with the standard pieces, all built from the config.

    Args:
        cfg: the frozen config. Dataset-dependent keys left at 0 (``MODEL.HEADS.NUM_CLASSES``,
            camera/view counts) are filled in from the training data.

    Example::

        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
    """

    def __init__(self, cfg: CfgNode):
        super().__init__()
        logger = logging.getLogger("clipreid_plugin")
        if not logger.handlers:
            setup_logger(distributed_rank=comm.get_rank())
        data_loader = self.build_train_loader(cfg)
        cfg = fill_data_dependent_keys(cfg, data_loader.data_info)
        self.cfg = cfg
        seed_all_rng(cfg.SOLVER.SEED)  # the initial weights depend only on the config
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        if comm.get_world_size() > 1:
            device = next(model.parameters()).device
            model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                            bucket_cap_mb=cfg.SOLVER.DDP.BUCKET_CAP_MB, gradient_as_bucket_view=True,
                                            static_graph=cfg.SOLVER.DDP.STATIC_GRAPH,
                                            # fixbase epochs leave the frozen layers without gradients
                                            find_unused_parameters=cfg.SOLVER.FIXBASE_EPOCHS > 0)
        model = maybe_compile(model, cfg)
        # the autocast dtype of the main loop and of every training phase (None = fp32)
        self.amp_dtype = resolve_amp_dtype(cfg.SOLVER.AMP, next(unwrap_model(model).parameters()).device)
        self._trainer = SimpleTrainer(model, data_loader, optimizer, cfg.SOLVER.CLIP_GRAD_NORM, self.amp_dtype,
                                      log_period=cfg.SOLVER.LOG_PERIOD_ITERS)
        self.model, self.data_loader, self.optimizer = model, data_loader, optimizer
        self.scheduler = self.build_lr_scheduler(cfg, optimizer, len(data_loader))
        self.checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, max_keep=cfg.SOLVER.CHECKPOINT_MAX_KEEP,
                                         optimizer=optimizer, scheduler=self.scheduler, trainer=self)
        # a checkpoint is usable on its own: it carries the resolved config and what the model is
        self.checkpointer.metadata = {"config": cfg.dump(), "model_info": model_info(model, cfg)}
        self.max_epochs = cfg.SOLVER.MAX_EPOCHS
        self.register_hooks(self.build_hooks())
        self._check_schedule()

    # ----------------------------------------------------------------------------------------
    # building blocks (override in a subclass to customise)
    # ----------------------------------------------------------------------------------------
    @classmethod
    def build_model(cls, cfg):
        """Returns: the model of ``cfg.MODEL.META_ARCHITECTURE`` on its device."""
        model = build_model(cfg)
        n = sum(p.numel() for p in model.parameters())
        logging.getLogger(__name__).info(f"Model {type(model).__name__}: {n / 1e6:.2f} M parameters")
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        """Returns: the optimizer (see :func:`clipreid_plugin.solver.build_optimizer`)."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch: int):
        """Returns: the LR scheduler (see :func:`clipreid_plugin.solver.build_lr_scheduler`)."""
        return build_lr_scheduler(cfg, optimizer, iters_per_epoch)

    @classmethod
    def build_train_loader(cls, cfg):
        """Returns: the training loader over DATASETS.NAMES."""
        return build_reid_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """Returns: ``(loader, num_query)`` for one test dataset."""
        return build_reid_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, num_query: int, output_dir: Optional[str] = None):
        """Returns: the evaluator for one test dataset."""
        return build_evaluator(cfg, dataset_name, num_query, output_dir)

    def build_hooks(self) -> List[hooks.HookBase]:
        """Returns: the hooks, in the order they run.

        Timer, LR scheduler, the hooks named in ``TRAINER.HOOKS`` (training phases such as
        CLIP-ReID's stage 1 among them), the checkpointer (before evaluation, so a failing
        evaluation never costs the weights), evaluation, and the writers last so they see
        everything the others logged.
        """
        cfg = self.cfg
        ret = [hooks.IterationTimer(), hooks.LRScheduler(self.optimizer, self.scheduler)]
        if cfg.SOLVER.FREEZE_ITERS > 0 and len(cfg.MODEL.FREEZE_LAYERS) > 0:  # fast-reid's freeze (layer_freeze.py)
            ret.append(LayerFreeze(cfg))
        if cfg.SOLVER.FIXBASE_EPOCHS > 0:  # torchreid's fixbase epochs (engine/fixbase.py)
            ret.append(FixBaseHook(cfg))
        ret.extend(hooks.build_hook(cfg, name) for name in cfg.TRAINER.HOOKS)
        ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))
        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(self.cfg, self.model),
                                  record_dir=cfg.OUTPUT_DIR))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), cfg.SOLVER.LOG_PERIOD_ITERS))
        return ret

    def build_writers(self, max_iter: Optional[int] = None, iters_per_epoch: Optional[int] = None,
                      phase: str = ""):
        """Console printer, JSON lines file (``metrics.json``), TensorBoard when installed.

        Args:
            max_iter: iterations of the loop the writers follow (ETA); default: the main loop's.
            iters_per_epoch: its iterations per epoch; default: the main loop's.
            phase: a training phase's name ("" for the main loop), marked in every record.

        Returns:
            The writers.
        """
        ipe = len(self.data_loader) if iters_per_epoch is None else iters_per_epoch
        total = self.max_epochs * ipe if max_iter is None else max_iter
        writers = [CommonMetricPrinter(total, ipe, phase=phase),
                   JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), phase=phase)]
        try:
            writers.append(TensorboardWriter(self.cfg.OUTPUT_DIR, phase=phase))
        except ImportError:
            log_once(logging.getLogger(__name__), f"TensorBoard not installed: no event files "
                     f"({extra_hint('tensorboard', 'tensorboard')}).")
        return writers

    def schedule(self) -> List[tuple]:
        """Returns: ``[(phase name, epochs), ...]``: the training phases in order, then ("main", MAX_EPOCHS)."""
        phases = [(h.phase_name, int(h.num_epochs)) for h in self.hooks if isinstance(h, hooks.PhaseHook)]
        return phases + [("main", int(self.max_epochs))]

    def _check_schedule(self) -> None:
        plan = self.schedule()
        if self.max_epochs < 0:
            raise ConfigError(f"SOLVER.MAX_EPOCHS is {self.max_epochs}; it must be >= 0 (0 only when a training "
                              f"phase of TRAINER.HOOKS trains something).")
        if sum(n for _, n in plan) <= 0:
            raise ConfigError("Nothing to train: SOLVER.MAX_EPOCHS is 0 and no training phase has epochs "
                              f"(schedule: {plan}). Set SOLVER.MAX_EPOCHS > 0, or use --eval-only to evaluate.")
        logging.getLogger(__name__).info(
            "Training schedule: " + ", then ".join(f"{name} {n} epoch{'s' if n != 1 else ''}" for name, n in plan))

    # ----------------------------------------------------------------------------------------
    # running
    # ----------------------------------------------------------------------------------------
    def resume_or_load(self, resume: bool = True) -> None:
        """Resume from the last good checkpoint of OUTPUT_DIR, or load MODEL.WEIGHTS, or start fresh.

        Args:
            resume: continue an interrupted run when OUTPUT_DIR has a checkpoint (model,
                optimizer, scheduler, grad scaler, epoch, hook states such as the CLIP-ReID phase).
                When the ``last_checkpoint`` pointer is missing, dangling or names an unreadable
                file, the newest readable checkpoint is used (and named in the log).
        """
        logger = logging.getLogger(__name__)
        state = self.checkpointer.resume() if resume else {}
        if state:
            logger.info(f"Resuming from {os.path.basename(state['path'])}: {self.epoch} of {self.max_epochs} epochs "
                        f"done.")
        else:
            if resume:
                logger.info(f"No checkpoint in {self.cfg.OUTPUT_DIR}: starting a new run.")
            self.epoch, self.iter = 0, 0
            if self.cfg.MODEL.WEIGHTS:
                load_model_weights(self.model, self.cfg.MODEL.WEIGHTS, allow_partial=self.cfg.MODEL.ALLOW_PARTIAL_WEIGHTS)
        self.start_epoch = self.epoch

    def train(self) -> Dict:
        """Train up to SOLVER.MAX_EPOCHS from where :meth:`resume_or_load` left off.

        Returns:
            The last evaluation results (``{dataset: metrics}``) on the main process.
        """
        try:
            super().train(self.start_epoch, self.max_epochs)
        except TrainingDivergedError as e:
            raise TrainingDivergedError(f"{e} {self._last_good_state()}") from None
        for h in self.hooks:
            if isinstance(h, hooks.EvalHook):
                return h.last_results
        return {}

    def _last_good_state(self) -> str:
        last = self.checkpointer.get_checkpoint_file()
        if last:
            return (f"The last good state is {os.path.basename(last)} in {self.cfg.OUTPUT_DIR}: continue from it with "
                    f"--resume once the cause is fixed.")
        return (f"No checkpoint had been written, so {self.cfg.OUTPUT_DIR} holds no run: run the same command again "
                f"once the cause is fixed.")

    def run_epoch(self):
        seed_all_rng(_epoch_seed(self.cfg.SOLVER.SEED, self.epoch, comm.get_rank()))
        super().run_epoch()

    def run_step(self, batch):
        self._trainer.iter = self.iter
        self._trainer._data_time = self._data_time
        self._trainer.run_step(batch)

    def check_weights_finite(self) -> None:
        """Raise TrainingDivergedError when a weight is NaN/inf (called before every checkpoint)."""
        self._trainer.check_weights_finite()

    def state_dict(self):
        sd = super().state_dict()
        sd.update(self._trainer.step_state())
        return sd

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._trainer.load_step_state(state)

    @classmethod
    def test(cls, cfg, model, evaluators=None) -> "OrderedDict[str, Dict]":
        """Evaluate ``model`` on every dataset of DATASETS.TESTS.

        Args:
            cfg: the config.
            model: the model (DDP-wrapped or not).
            evaluators: optional list of evaluators, one per test dataset.

        Returns:
            ``{dataset_name: {metric: value}}`` on the main process ({} elsewhere).
        """
        logger = logging.getLogger(__name__)
        results = OrderedDict()
        dtype = resolve_dtype(cfg.TEST.PRECISION, next(unwrap_model(model).parameters()).device, "TEST.PRECISION")
        for i, name in enumerate(cfg.DATASETS.TESTS):
            loader, num_query = cls.build_test_loader(cfg, name)
            evaluator = evaluators[i] if evaluators else cls.build_evaluator(cfg, name, num_query, cfg.OUTPUT_DIR)
            results[name] = inference_on_dataset(model, loader, evaluator, flip_test=cfg.TEST.FLIP.ENABLED,
                                                 amp_dtype=dtype)
        if comm.is_main_process():
            logger.info("Evaluation results:\n" + results_table(results))
            return results
        return OrderedDict()


def describe_model(model) -> str:
    """Returns: a short label of the backbone actually built ("ResNet-18", "CLIP RN50", ...)."""
    backbone = getattr(unwrap_model(model), "backbone", None)
    describe = getattr(backbone, "describe", None)
    return describe() if callable(describe) else type(backbone or model).__name__


CONFIG_FILE = "config.yaml"  # the run's resolved config (reproduces the run)


RUN_INFO_FILE = "run_info.json"  # what the run built (model_info)


def model_info(model, cfg: CfgNode) -> Dict:
    """What a run built: ``meta_architecture``, ``backbone`` (:func:`describe_model`),
    ``parameters``, ``datasets`` (train) and ``tests``. Written to ``run_info.json`` and into
    every checkpoint, for tables that collect finished runs."""
    return {"meta_architecture": cfg.MODEL.META_ARCHITECTURE, "backbone": describe_model(model),
            "parameters": sum(p.numel() for p in unwrap_model(model).parameters()),
            "datasets": list(cfg.DATASETS.NAMES), "tests": list(cfg.DATASETS.TESTS)}


def write_run_files(cfg: CfgNode, model) -> None:
    """Write ``OUTPUT_DIR/config.yaml`` (the resolved config, which reproduces the run) and
    ``run_info.json`` (:func:`model_info`); main process only."""
    if not comm.is_main_process() or not cfg.OUTPUT_DIR:
        return
    cfg.dump_to(os.path.join(cfg.OUTPUT_DIR, CONFIG_FILE))
    atomic_write_text(os.path.join(cfg.OUTPUT_DIR, RUN_INFO_FILE), json.dumps(model_info(model, cfg), indent=2) + "\n")
