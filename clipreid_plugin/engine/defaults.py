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
from typing import Dict, List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from clipreid_plugin.config import CfgNode, get_cfg
from clipreid_plugin.utils import comm
from clipreid_plugin.utils.checkpoint import Checkpointer, load_model_weights, unwrap_model
from clipreid_plugin.utils.env import resolve_amp_dtype, seed_all_rng
from clipreid_plugin.utils.events import CommonMetricPrinter, JSONWriter, TensorboardWriter
from clipreid_plugin.utils.logger import setup_logger

from . import hooks
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase

__all__ = ["default_argument_parser", "setup_cfg", "default_setup", "DefaultTrainer", "META_HOOK_BUILDERS"]

# Meta-architectures that need extra training phases register a hook builder here:
# ``META_HOOK_BUILDERS["CLIPReID"] = fn(trainer) -> [HookBase, ...]`` (run before evaluation hooks).
META_HOOK_BUILDERS: Dict[str, object] = {}


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
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    cfg.freeze()
    return cfg


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
        cfg = self.fill_data_dependent_keys(cfg, data_loader)
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
        dtype = resolve_amp_dtype(cfg.SOLVER.AMP, next(unwrap_model(model).parameters()).device)
        if dtype is not None:
            self._trainer = AMPTrainer(model, data_loader, optimizer, cfg.SOLVER.CLIP_GRAD_NORM, dtype=dtype)
        else:
            self._trainer = SimpleTrainer(model, data_loader, optimizer, cfg.SOLVER.CLIP_GRAD_NORM)
        self.model, self.data_loader, self.optimizer = model, data_loader, optimizer
        self.scheduler = self.build_lr_scheduler(cfg, optimizer, len(data_loader))
        self.checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, optimizer=optimizer, scheduler=self.scheduler,
                                         trainer=self)
        self.max_epochs = cfg.SOLVER.MAX_EPOCHS
        self.register_hooks(self.build_hooks())

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

    @staticmethod
    def fill_data_dependent_keys(cfg: CfgNode, data_loader) -> CfgNode:
        """Set keys left empty that depend on the training data (classes, cameras, views, kind).

        Args:
            cfg: the config.
            data_loader: the training loader (``num_classes``, ``num_cameras``, ``num_views``).

        Returns:
            A frozen copy of ``cfg`` with the values filled in.
        """
        cfg = cfg.clone()
        cfg.defrost()
        if cfg.MODEL.HEADS.NUM_CLASSES == 0:
            cfg.MODEL.HEADS.NUM_CLASSES = int(data_loader.num_classes)
        for tower in ("CLIP", "VIT"):  # side-information embeddings need the camera / view counts
            node = cfg.MODEL.BACKBONE.get(tower)
            if node is None:
                continue
            for key, value in (("NUM_CAMERAS", data_loader.num_cameras), ("NUM_VIEWS", data_loader.num_views)):
                if key in node and node[key] == 0:
                    node[key] = int(value)
        prompt = cfg.MODEL.get("PROMPT")
        if prompt is not None and not prompt.CLASS_WORD and getattr(data_loader, "kind", None):
            prompt.CLASS_WORD = data_loader.kind  # "person" / "vehicle": CLIP-ReID's prompt template
        cfg.freeze()
        return cfg

    def build_hooks(self) -> List[hooks.HookBase]:
        """Returns: the hooks, in the order they run.

        Timer, LR scheduler, the meta-architecture's own phases (e.g. CLIP-ReID stage 1), the
        checkpointer (before evaluation, so a failing evaluation never costs the weights),
        evaluation, and the writers last so they see everything the others logged.
        """
        cfg = self.cfg
        ret = [hooks.IterationTimer(), hooks.LRScheduler(self.optimizer, self.scheduler)]
        builder = META_HOOK_BUILDERS.get(cfg.MODEL.META_ARCHITECTURE)
        if builder is not None:
            ret.extend(builder(self))
        ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))
        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(self.cfg, self.model)))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), cfg.SOLVER.LOG_PERIOD_ITERS))
        return ret

    def build_writers(self):
        """Returns: console printer, JSON lines file (``metrics.json``), TensorBoard when installed."""
        total = self.max_epochs * len(self.data_loader)
        writers = [CommonMetricPrinter(total, len(self.data_loader)),
                   JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))]
        try:
            writers.append(TensorboardWriter(self.cfg.OUTPUT_DIR))
        except ImportError:
            logging.getLogger(__name__).info("TensorBoard not installed: skipping its writer.")
        return writers

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
        extra = self._trainer.state_dict()
        if "grad_scaler" in extra:
            sd["grad_scaler"] = extra["grad_scaler"]
        return sd

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "grad_scaler" in state and getattr(self._trainer, "grad_scaler", None) is not None:
            self._trainer.grad_scaler.load_state_dict(state["grad_scaler"])

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
