"""The standard trainer and command-line plumbing (after detectron2's ``engine/defaults.py``).

:class:`DefaultTrainer` builds everything from the config through the registries (model,
optimizer, scheduler, loaders, evaluators) and registers the standard hooks. Each
``build_*`` is a classmethod a project can override; a method's extra phases are hooks
(:meth:`DefaultTrainer.build_hooks`), not edits to the loop.
"""

import argparse
import atexit
import logging
import os
import sys
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel

from clipreid_plugin.config import CfgNode, fill_data_dependent_keys, load_cfg
from clipreid_plugin.utils import comm
from clipreid_plugin.utils.checkpoint import Checkpointer, load_model_weights, unwrap_model
from clipreid_plugin.utils.env import resolve_amp_dtype, resolve_dtype, seed_all_rng, set_determinism
from clipreid_plugin.utils.errors import ConfigError, TrainingDivergedError
from clipreid_plugin.utils.events import CommonMetricPrinter, JSONWriter, TensorboardWriter
from clipreid_plugin.utils.logger import FILE_ONLY, log_once, setup_logger
from clipreid_plugin.utils.optional import extra_hint

from . import hooks, run_dir
from .fixbase import FixBaseHook
from .launch import take_captured_output
from .layer_freeze import LayerFreeze
from .train_loop import SimpleTrainer, TrainerBase

__all__ = ["default_argument_parser", "setup_cfg", "default_setup", "DefaultTrainer", "run_training", "maybe_compile",
           "describe_model", "model_info", "write_run_files", "build_evaluation_model", "CONFIG_FILE", "RUN_INFO_FILE"]


class _FlagsAnywhereParser(argparse.ArgumentParser):
    """An ArgumentParser that accepts its flags anywhere, also after the trailing overrides
    (``... SOLVER.MAX_EPOCHS 10 --resume``): known options are moved in front before parsing."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        takes_value = {opt: action.nargs != 0 for action in self._actions for opt in action.option_strings}
        flags, rest, i = [], [], 0
        while i < len(args):
            name = args[i].split("=", 1)[0]
            if name in takes_value:
                flags.append(args[i])
                if takes_value[name] and "=" not in args[i] and i + 1 < len(args):
                    flags.append(args[i + 1])
                    i += 1
            else:
                rest.append(args[i])
            i += 1
        return super().parse_known_args(flags + rest, namespace)


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """Returns: the argument parser of ``tools/train_net.py`` (config, resume, eval, distributed).

    Flags are accepted anywhere on the command line, also after the ``KEY VALUE`` overrides.
    """
    parser = _FlagsAnywhereParser(
        description="Train or evaluate a ReID model (clipreid_plugin).",
        epilog=epilog or (
            "Examples:\n"
            "  python tools/train_net.py --config-file configs/SyntheticReID/bagtricks_R18.yml\n"
            "  python tools/train_net.py --config-file projects/CLIPReID/configs/veri_vit.yml "
            "DATASETS.ROOT_DIR /data\n"
            "  python tools/train_net.py --eval-only MODEL.WEIGHTS output/run/model_final.pth\n"
            "  python tools/train_net.py --config-file CFG --num-gpus 4\n"
            "  torchrun --nproc-per-node 4 --max-restarts 3 tools/train_net.py --config-file CFG"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE",
                        help="the YAML config, or a checkpoint of this toolkit (its stored config); with --eval-only "
                             "and no --config-file, MODEL.WEIGHTS' stored config is used")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in OUTPUT_DIR from its last good checkpoint (model, optimizer, scheduler, "
                             "epoch, training phase); without it, a folder that already holds a run is refused")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an OUTPUT_DIR that holds another run, deleting that run's files")
    parser.add_argument("--fresh-subdir", action="store_true",
                        help="start the run in a new time-stamped sub-folder of OUTPUT_DIR")
    parser.add_argument("--eval-only", action="store_true",
                        help="only evaluate MODEL.WEIGHTS (or, with --resume, the run's last checkpoint) on "
                             "DATASETS.TESTS; needs no training data and no pretrained weights file")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine: one per GPU, or CPU processes (gloo) without GPUs")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (0 .. num-machines-1)")
    parser.add_argument("--dist-url", default="auto",
                        help="rendezvous URL tcp://HOST:PORT of machine 0; 'auto' picks a free local port")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=None,
                        help="config overrides as KEY VALUE pairs, e.g. SOLVER.MAX_EPOCHS 10")
    return parser


def _override(opts, key: str) -> str:
    pairs = dict(zip(opts[0::2], opts[1::2])) if opts else {}
    return str(pairs.get(key, ""))


def setup_cfg(args) -> CfgNode:
    """Build the frozen config: defaults, plugin keys, ``--config-file`` (with _BASE_), overrides.

    With ``--eval-only`` and no ``--config-file``, the config stored in the ``MODEL.WEIGHTS``
    checkpoint is the base: a checkpoint evaluates on its own.

    Args:
        args: parsed arguments with ``config_file`` and ``opts`` (and ``eval_only``).

    Returns:
        The frozen CfgNode.
    """
    config_file = args.config_file
    if not config_file and getattr(args, "eval_only", False):
        config_file = _override(args.opts, "MODEL.WEIGHTS")
    return load_cfg(config_file, args.opts or [])


def _prepare_output_dir(cfg: CfgNode, args) -> Tuple[CfgNode, List[str]]:
    """Decide where the run writes and take its folder (see :mod:`.run_dir`); every rank agrees.

    Returns:
        (the config, notes to log once the logger writes to the folder).
    """
    eval_only = bool(getattr(args, "eval_only", False))
    out = cfg.OUTPUT_DIR
    if eval_only and args.resume:
        # --eval-only --resume evaluates the run folder's last checkpoint: found here, before the
        # evaluation moves to a sub-folder of its own
        found = Checkpointer(torch.nn.Module(), out).checkpoints()
        if found:
            cfg = _with_weights(cfg, found[0])
    if getattr(args, "fresh_subdir", False):
        out = comm.all_gather(run_dir.fresh_subdir(out) if comm.is_main_process() else None)[0]
    elif eval_only and run_dir.holds_run(out):
        # never mix an evaluation into a training run's folder: its own sub-folder
        weights = cfg.MODEL.WEIGHTS or "last_checkpoint"
        out = os.path.join(out, "eval_" + os.path.splitext(os.path.basename(weights))[0])
    run_dir.check_writable(out)
    problem, notes = None, []
    if comm.is_main_process():
        lock = run_dir.RunLock(out)
        try:
            note = lock.acquire()
            notes += [note] if note else []
            atexit.register(lock.release)
            if not eval_only and not args.resume and run_dir.holds_run(out):
                if getattr(args, "overwrite", False):
                    removed = run_dir.remove_run_files(out)
                    notes.append(f"--overwrite: removed {len(removed)} file(s) of the previous run in {out}.")
                else:
                    found = ", ".join(os.path.basename(p) for p in run_dir.find_run_files(out)[:4])
                    problem = (f"OUTPUT_DIR {out} already holds a run ({found}). Continue it with --resume, replace it "
                               f"with --overwrite, start in a new sub-folder with --fresh-subdir, or set another "
                               f"OUTPUT_DIR.")
            if not eval_only:
                cleared = run_dir.remove_failed_attempt(out)
                if cleared:
                    notes.append(f"Removed {', '.join(os.path.basename(p) for p in cleared)} of an earlier training "
                                 f"in {out} that stopped before its first checkpoint.")
            run_dir.remove_leftovers(out)
        except ConfigError as e:
            problem = str(e)
    problem = comm.all_gather(problem)[0]
    if problem:
        raise ConfigError(problem)
    if out != cfg.OUTPUT_DIR:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.OUTPUT_DIR = out
        cfg.freeze()
    return cfg, notes


def _with_weights(cfg: CfgNode, weights: str) -> CfgNode:
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    cfg.freeze()
    return cfg


def default_setup(cfg: CfgNode, args) -> CfgNode:
    """Prepare a run: its folder (one run per folder, locked, no leftovers), logger, seeds, cuDNN.

    A new run refuses an ``OUTPUT_DIR`` that holds another run, unless ``--resume``,
    ``--overwrite`` or ``--fresh-subdir``; a process that torchrun restarted after a failure
    resumes on its own. ``OUTPUT_DIR/config.yaml`` is written later, once the run's weights
    are loaded (:func:`run_training`).

    Args:
        cfg: the frozen config.
        args: the parsed command-line arguments (logged; ``resume`` is set on a torchrun restart).

    Returns:
        The config to run with (``OUTPUT_DIR`` changed by ``--fresh-subdir`` or for an
        evaluation inside a training run's folder).
    """
    for flag in ("resume", "overwrite", "fresh_subdir", "eval_only"):
        if not hasattr(args, flag):
            setattr(args, flag, False)
    # every rank follows rank 0's view of whether torchrun restarted the job
    restarted = comm.all_gather(run_dir.is_elastic_restart(cfg.OUTPUT_DIR) if comm.is_main_process() else None)[0]
    if restarted:
        args.resume = True
    cfg, notes = _prepare_output_dir(cfg, args)
    cfg = _resolve_root_dir(cfg)
    if comm.is_main_process() and not args.eval_only:
        run_dir.record_torchrun_job(cfg.OUTPUT_DIR)
    rank = comm.get_rank()
    logger = setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank)
    for text in take_captured_output():  # C++ noise of a torchrun restart: the log file only
        logger.info(text, extra=FILE_ONLY)
    for note in notes:
        logger.warning(note)
    logger.info(f"Rank {rank} of {comm.get_world_size()} processes; torch {torch.__version__}; "
                f"CUDA available: {torch.cuda.is_available()}")
    logger.info("Command line: " + " ".join(sys.argv))
    logger.info(f"Arguments: {args}")
    if restarted:
        logger.info(f"torchrun restarted this process (restart {os.environ.get('TORCHELASTIC_RESTART_COUNT')}): "
                    f"resuming from the last good checkpoint of {cfg.OUTPUT_DIR}.")
    seed_all_rng(cfg.SOLVER.SEED)
    set_determinism(cfg.DETERMINISTIC, cfg.CUDNN_BENCHMARK)
    return cfg


def _resolve_root_dir(cfg: CfgNode) -> CfgNode:
    """``DATASETS.ROOT_DIR`` as an absolute path (``~`` expanded), so that the run's
    ``config.yaml`` and checkpoints find the data from any working folder (``--eval-only``
    elsewhere); a ``DATASETS.ROOT_DIR`` override on the command line still replaces it."""
    root = cfg.DATASETS.ROOT_DIR
    resolved = os.path.abspath(os.path.expanduser(root)) if root else root
    if resolved == root:
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.ROOT_DIR = resolved
    cfg.freeze()
    return cfg


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
        from clipreid_plugin.evaluation import inference_on_dataset, results_table

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
    import json

    from clipreid_plugin.utils.file_io import atomic_write_text

    if not comm.is_main_process() or not cfg.OUTPUT_DIR:
        return
    cfg.dump_to(os.path.join(cfg.OUTPUT_DIR, CONFIG_FILE))
    atomic_write_text(os.path.join(cfg.OUTPUT_DIR, RUN_INFO_FILE), json.dumps(model_info(model, cfg), indent=2) + "\n")


def build_evaluation_model(cfg: CfgNode, weights: str):
    """The model a checkpoint holds, ready for evaluation, built without training data.

    Data-dependent keys left empty are taken from the checkpoint's stored config (this
    toolkit's checkpoints), else from the training split when its folder exists (no loader, no
    batch checks), else they stay 0 (no classifier: not needed to evaluate). Every tensor must
    come from the checkpoint (unless ``MODEL.ALLOW_PARTIAL_WEIGHTS``), so no pretrained file
    is read.

    Args:
        cfg: the config.
        weights: the checkpoint.

    Returns:
        (model in eval mode, the config it was built from).
    """
    import yaml

    from clipreid_plugin.config import DataInfo, data_dependent_keys, lookup_key
    from clipreid_plugin.data import DatasetError, build_train_samples, train_data_info
    from clipreid_plugin.modeling import build_model
    from clipreid_plugin.utils.checkpoint import read_checkpoint_metadata

    logger = logging.getLogger(__name__)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    stored = read_checkpoint_metadata(weights).get("config")
    if stored:
        saved = yaml.safe_load(stored) or {}
        for key in data_dependent_keys():
            node, leaf = lookup_key(cfg, key)
            saved_node, saved_leaf = lookup_key(saved, key)
            if node is not None and node[leaf] in (0, "") and saved_node is not None \
                    and saved_node[saved_leaf] not in (None, 0, ""):
                node[leaf] = saved_node[saved_leaf]
        cfg.freeze()
    else:
        cfg.freeze()
        try:
            samples, datasets = build_train_samples(cfg)
            info = train_data_info(samples, datasets)
        except DatasetError as e:
            logger.info(f"No training data to size the model from ({e}); the data-dependent keys keep their config "
                        f"values.")
            info = DataInfo(0, 0, 0, None)
        cfg = fill_data_dependent_keys(cfg, info)
    model = build_model(cfg)
    load_model_weights(model, weights, allow_partial=cfg.MODEL.ALLOW_PARTIAL_WEIGHTS)
    return model.eval(), cfg


def run_training(cfg: CfgNode, eval_only: bool = False, resume: bool = False,
                 on_ready: Optional[Callable[[DefaultTrainer], None]] = None) -> Dict:
    """The run of ``tools/train_net.py`` once :func:`default_setup` prepared its folder: build
    the trainer, resume or load weights, write ``config.yaml`` and ``run_info.json``, train,
    and write ``results.*``. With ``eval_only``, evaluate a checkpoint instead
    (:func:`build_evaluation_model`: no training data, no pretrained file).

    ``tools/benchmark.py`` and ``tools/demo.py`` run methods through this same function.

    Args:
        cfg: the frozen config (after :func:`default_setup`).
        eval_only: evaluate ``MODEL.WEIGHTS`` only (for ``--eval-only --resume``,
            :func:`default_setup` sets it to the last checkpoint of the run folder).
        resume: continue from OUTPUT_DIR's last good checkpoint (training only).
        on_ready: called with the trainer once its weights are loaded, before training (e.g.
            to evaluate the untrained model).

    Returns:
        ``{"results": {dataset: metrics}, "trainer": the trainer (None with eval_only)}``
        (results {} off the main process).
    """
    from clipreid_plugin.evaluation import save_run_results

    from .validate import validate_config

    cfg = validate_config(cfg, training=not eval_only)  # before any data is read or model built
    if eval_only:
        weights = cfg.MODEL.WEIGHTS  # with --resume, default_setup set it to the run's last checkpoint
        if not weights:
            raise ConfigError("--eval-only needs weights: set MODEL.WEIGHTS to a checkpoint, or add --resume to "
                              "evaluate the last checkpoint of OUTPUT_DIR.")
        model, cfg = build_evaluation_model(cfg, weights)
        write_run_files(cfg, model)
        results = DefaultTrainer.test(cfg, model)
        if comm.is_main_process() and results:
            save_run_results(cfg.OUTPUT_DIR, results)
        return {"results": results, "trainer": None}

    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    write_run_files(trainer.cfg, trainer.model)  # only once the run's weights loaded
    if on_ready is not None:
        on_ready(trainer)
    results = trainer.train()
    if comm.is_main_process() and results:
        save_run_results(trainer.cfg.OUTPUT_DIR, results)
    return {"results": results, "trainer": trainer}
