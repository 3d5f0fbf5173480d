"""The standard trainer and command-line plumbing (after detectron2's ``engine/defaults.py``).

:class:`DefaultTrainer` builds everything from the config through the registries (model,
optimizer, scheduler, loaders, evaluators) and registers the standard hooks. Each
``build_*`` is a classmethod a project can override; a method's extra phases are hooks
(:meth:`DefaultTrainer.build_hooks`), not edits to the loop.
"""

import argparse
import logging
import os
import sys
from collections import OrderedDict
from typing import Callable, Dict, List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from clipreid_plugin.config import CfgNode, fill_data_dependent_keys, load_cfg
from clipreid_plugin.utils import comm
from clipreid_plugin.utils.checkpoint import Checkpointer, load_model_weights, unwrap_model
from clipreid_plugin.utils.env import resolve_amp_dtype, seed_all_rng
from clipreid_plugin.utils.errors import ConfigError
from clipreid_plugin.utils.events import CommonMetricPrinter, JSONWriter, TensorboardWriter
from clipreid_plugin.utils.logger import setup_logger

from . import hooks
from .train_loop import SimpleTrainer, TrainerBase

__all__ = ["default_argument_parser", "setup_cfg", "default_setup", "DefaultTrainer", "run_training",
           "describe_model", "write_run_info", "RUN_INFO_FILE"]


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """Returns: the argument parser of ``tools/train_net.py`` (config, resume, eval, distributed)."""
    parser = argparse.ArgumentParser(
        description="Train or evaluate a ReID model (clipreid_plugin).",
        epilog=epilog or (
            "Examples:\n"
            "  python tools/train_net.py --config-file configs/SyntheticReID/bagtricks_R18.yml\n"
            "  python tools/train_net.py --config-file projects/CLIPReID/configs/veri_vit.yml "
            "DATASETS.ROOT_DIR /data\n"
            "  python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth\n"
            "  python tools/train_net.py --config-file CFG --num-gpus 4\n"
            "  torchrun --nproc-per-node 4 tools/train_net.py --config-file CFG"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to the YAML config file")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in OUTPUT_DIR (model, optimizer, scheduler, "
                             "epoch, training phase); without it, training starts from MODEL.WEIGHTS or scratch")
    parser.add_argument("--eval-only", action="store_true",
                        help="only evaluate MODEL.WEIGHTS (or the last checkpoint with --resume) on DATASETS.TESTS")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine: one per GPU, or CPU processes (gloo) without GPUs")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (0 .. num-machines-1)")
    parser.add_argument("--dist-url", default="auto",
                        help="rendezvous URL tcp://HOST:PORT of machine 0; 'auto' picks a free local port")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=None,
                        help="config overrides as trailing KEY VALUE pairs, e.g. SOLVER.MAX_EPOCHS 10")
    return parser


def setup_cfg(args) -> CfgNode:
    """Build the frozen config: defaults, plugin keys, ``--config-file`` (with _BASE_), overrides.

    Args:
        args: parsed arguments with ``config_file`` and ``opts``.

    Returns:
        The frozen CfgNode.
    """
    return load_cfg(args.config_file, args.opts or [])


def default_setup(cfg: CfgNode, args) -> None:
    """Prepare a run: output folder, logger, config dump, seeds, cuDNN flags.

    Args:
        cfg: the frozen config.
        args: the parsed command-line arguments (logged).
    """
    rank = comm.get_rank()
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    logger = setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank)
    logger.info(f"Rank {rank} of {comm.get_world_size()} processes; torch {torch.__version__}; "
                f"CUDA available: {torch.cuda.is_available()}")
    logger.info("Command line: " + " ".join(sys.argv))
    logger.info(f"Arguments: {args}")
    if comm.is_main_process():
        path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
        cfg.dump_to(path)
        logger.info(f"Full config saved to {path}")
    seed_all_rng(cfg.SOLVER.SEED)
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


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
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            # the resolved config (with the data-dependent values) reproduces the run
            cfg.dump_to(os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
        seed_all_rng(cfg.SOLVER.SEED)  # the initial weights depend only on the config
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        if comm.get_world_size() > 1:
            device = next(model.parameters()).device
            model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        # the autocast dtype of the main loop and of every training phase (None = fp32)
        self.amp_dtype = resolve_amp_dtype(cfg.SOLVER.AMP, next(unwrap_model(model).parameters()).device)
        self._trainer = SimpleTrainer(model, data_loader, optimizer, cfg.SOLVER.CLIP_GRAD_NORM, self.amp_dtype)
        self.model, self.data_loader, self.optimizer = model, data_loader, optimizer
        self.scheduler = self.build_lr_scheduler(cfg, optimizer, len(data_loader))
        self.checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, optimizer=optimizer, scheduler=self.scheduler,
                                         trainer=self)
        self.max_epochs = cfg.SOLVER.MAX_EPOCHS
        self.register_hooks(self.build_hooks())
        self._check_schedule()

    # ----------------------------------------------------------------------------------------
    # building blocks (override in a subclass to customise)
    # ----------------------------------------------------------------------------------------
    @classmethod
    def build_model(cls, cfg):
        """Returns: the model of ``cfg.MODEL.META_ARCHITECTURE`` on its device."""
        from clipreid_plugin.modeling import build_model

        model = build_model(cfg)
        n = sum(p.numel() for p in model.parameters())
        logging.getLogger(__name__).info(f"Model {type(model).__name__}: {n / 1e6:.2f} M parameters")
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        """Returns: the optimizer (see :func:`clipreid_plugin.solver.build_optimizer`)."""
        from clipreid_plugin.solver import build_optimizer

        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch: int):
        """Returns: the LR scheduler (see :func:`clipreid_plugin.solver.build_lr_scheduler`)."""
        from clipreid_plugin.solver import build_lr_scheduler

        return build_lr_scheduler(cfg, optimizer, iters_per_epoch)

    @classmethod
    def build_train_loader(cls, cfg):
        """Returns: the training loader over DATASETS.NAMES."""
        from clipreid_plugin.data import build_reid_train_loader

        return build_reid_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """Returns: ``(loader, num_query)`` for one test dataset."""
        from clipreid_plugin.data import build_reid_test_loader

        return build_reid_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, num_query: int, output_dir: Optional[str] = None):
        """Returns: the evaluator for one test dataset."""
        from clipreid_plugin.evaluation import build_evaluator

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
        ret.extend(hooks.build_hook(cfg, name) for name in cfg.TRAINER.HOOKS)
        ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))
        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(self.cfg, self.model)))
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
            logging.getLogger(__name__).info("TensorBoard not installed: skipping its writer.")
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
        """Resume from the last checkpoint of OUTPUT_DIR, or load MODEL.WEIGHTS, or start fresh.

        Args:
            resume: continue an interrupted run when OUTPUT_DIR has a checkpoint (model,
                optimizer, scheduler, grad scaler, epoch, hook states such as the CLIP-ReID phase).
        """
        logger = logging.getLogger(__name__)
        if resume and self.checkpointer.has_checkpoint():
            self.checkpointer.resume()
            logger.info(f"Resuming at epoch {self.epoch + 1}")
        else:
            if resume:
                logger.info(f"No checkpoint in {self.cfg.OUTPUT_DIR}: starting a new run.")
            self.epoch, self.iter = 0, 0
            if self.cfg.MODEL.WEIGHTS:
                load_model_weights(self.model, self.cfg.MODEL.WEIGHTS)
        self.start_epoch = self.epoch

    def train(self) -> Dict:
        """Train up to SOLVER.MAX_EPOCHS from where :meth:`resume_or_load` left off.

        Returns:
            The last evaluation results (``{dataset: metrics}``) on the main process.
        """
        super().train(self.start_epoch, self.max_epochs)
        for h in self.hooks:
            if isinstance(h, hooks.EvalHook):
                return h.last_results
        return {}

    def run_epoch(self):
        seed_all_rng(_epoch_seed(self.cfg.SOLVER.SEED, self.epoch, comm.get_rank()))
        super().run_epoch()

    def run_step(self, batch):
        self._trainer.iter = self.iter
        self._trainer._data_time = self._data_time
        self._trainer.run_step(batch)

    def state_dict(self):
        sd = super().state_dict()
        sd.update(self._trainer.optimization_step.state_dict())
        return sd

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._trainer.optimization_step.load_state_dict(state)

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
        from clipreid_plugin.evaluation import inference_on_dataset, results_table

        logger = logging.getLogger(__name__)
        results = OrderedDict()
        for i, name in enumerate(cfg.DATASETS.TESTS):
            loader, num_query = cls.build_test_loader(cfg, name)
            evaluator = evaluators[i] if evaluators else cls.build_evaluator(cfg, name, num_query, cfg.OUTPUT_DIR)
            results[name] = inference_on_dataset(model, loader, evaluator, flip_test=cfg.TEST.FLIP.ENABLED)
        if comm.is_main_process():
            logger.info("Evaluation results:\n" + results_table(results))
            return results
        return OrderedDict()


def describe_model(model) -> str:
    """Returns: a short label of the backbone actually built ("ResNet-18", "CLIP RN50", ...)."""
    backbone = getattr(unwrap_model(model), "backbone", None)
    describe = getattr(backbone, "describe", None)
    return describe() if callable(describe) else type(backbone or model).__name__


RUN_INFO_FILE = "run_info.json"


def write_run_info(trainer: DefaultTrainer) -> str:
    """Write ``OUTPUT_DIR/run_info.json``: what a run built, for tables that collect finished runs.

    Keys: ``meta_architecture``, ``backbone`` (:func:`describe_model`), ``parameters``,
    ``datasets`` (train) and ``tests``.

    Returns:
        The path written.
    """
    import json

    from clipreid_plugin.utils.file_io import atomic_write_text

    cfg = trainer.cfg
    info = {"meta_architecture": cfg.MODEL.META_ARCHITECTURE, "backbone": describe_model(trainer.model),
            "parameters": sum(p.numel() for p in unwrap_model(trainer.model).parameters()),
            "datasets": list(cfg.DATASETS.NAMES), "tests": list(cfg.DATASETS.TESTS)}
    path = os.path.join(cfg.OUTPUT_DIR, RUN_INFO_FILE)
    atomic_write_text(path, json.dumps(info, indent=2) + "\n")
    return path


def run_training(cfg: CfgNode, eval_only: bool = False, resume: bool = False,
                 on_ready: Optional[Callable[[DefaultTrainer], None]] = None) -> Dict:
    """The run of ``tools/train_net.py`` once its config is set up: build the trainer, resume or
    load weights, then train (or only evaluate), and write ``results.*`` to OUTPUT_DIR.

    ``tools/benchmark.py`` and ``tools/demo.py`` run methods through this same function.

    Args:
        cfg: the frozen config (after :func:`default_setup`).
        eval_only: evaluate ``MODEL.WEIGHTS`` (or the last checkpoint with ``resume``) only.
        resume: continue from OUTPUT_DIR's last checkpoint.
        on_ready: called with the trainer once its weights are loaded, before training (e.g.
            to evaluate the untrained model).

    Returns:
        ``{"results": {dataset: metrics}, "trainer": the trainer}`` (results {} off the main process).
    """
    from clipreid_plugin.evaluation import save_run_results

    trainer = DefaultTrainer(cfg)
    if comm.is_main_process():
        write_run_info(trainer)
    trainer.resume_or_load(resume=resume)
    if on_ready is not None:
        on_ready(trainer)
    if eval_only:
        results = DefaultTrainer.test(trainer.cfg, trainer.model)
    else:
        results = trainer.train()
    if comm.is_main_process() and results:
        save_run_results(trainer.cfg.OUTPUT_DIR, results)
    return {"results": results, "trainer": trainer}
