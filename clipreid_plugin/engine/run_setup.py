"""A run's process setup before anything is built: the output-folder policy (a new run, ``--resume``,
``--overwrite``, ``--fresh-subdir``, ``--eval-only`` in its own sub-folder), the lock on it, the
logger, the seeds and determinism, and ``DATASETS.ROOT_DIR`` made absolute."""

import atexit
import os
import sys
from typing import List, Tuple

import torch

from clipreid_plugin.config import CfgNode
from clipreid_plugin.utils import comm
from clipreid_plugin.utils.checkpoint import Checkpointer
from clipreid_plugin.utils.seeding import seed_all_rng, set_determinism
from clipreid_plugin.utils.errors import ConfigError
from clipreid_plugin.utils.logger import FILE_ONLY, setup_logger

from . import run_dir
from .launch import take_captured_output

__all__ = ["default_setup"]


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
