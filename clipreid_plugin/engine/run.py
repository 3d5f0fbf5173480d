"""One run of ``tools/train_net.py`` after its folder is set up: train (or only evaluate) and write
the results; ``tools/benchmark.py`` and ``tools/demo.py`` call it in-process."""

from typing import Callable, Dict, Optional

from clipreid_plugin.config import CfgNode
from clipreid_plugin.evaluation import save_run_results
from clipreid_plugin.utils import comm
from clipreid_plugin.utils.errors import ConfigError

from .evaluation_model import build_evaluation_model
from .trainer import DefaultTrainer, write_run_files
from .validate import validate_config

__all__ = ["run_training"]


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
