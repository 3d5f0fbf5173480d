#!/usr/bin/env python
"""Train or evaluate any registered ReID method from a YAML config.

    python tools/train_net.py --config-file configs/SyntheticReID/bagtricks_R18.yml
    python tools/train_net.py --config-file projects/CLIPReID/configs/veri_vit.yml DATASETS.ROOT_DIR /data
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS path/to/model.pth
    python tools/train_net.py --config-file CFG --num-gpus 4        (or: torchrun --nproc-per-node 4 ...)

Run ``--help`` for every flag. Trailing ``KEY VALUE`` pairs override the config.
"""

import logging
import os
import sys

import clipreid_plugin  # noqa: F401  (registers every built-in component)
from clipreid_plugin.config import ConfigError
from clipreid_plugin.data import DatasetError
from clipreid_plugin.engine import DefaultTrainer, default_argument_parser, default_setup, launch, setup_cfg
from clipreid_plugin.evaluation import results_markdown, save_results_csv, save_results_json
from clipreid_plugin.utils import comm
from clipreid_plugin.utils.checkpoint import CheckpointError
from clipreid_plugin.utils.file_io import atomic_write_text


def save_results(output_dir, results):
    """Write ``results.json``, ``results.csv`` and ``results.md`` (one row per test set)."""
    save_results_json(os.path.join(output_dir, "results.json"), results)
    save_results_csv(os.path.join(output_dir, "results.csv"), results)
    atomic_write_text(os.path.join(output_dir, "results.md"), results_markdown(results) + "\n")
    logging.getLogger("clipreid_plugin").info(f"Results written to {output_dir}/results.{{json,csv,md}}")


def main(args):
    """Per-process entry point: build the config and the trainer, then train or evaluate.

    Returns:
        The evaluation results ``{dataset: metrics}`` (main process).
    """
    cfg = setup_cfg(args)
    default_setup(cfg, args)
    trainer = DefaultTrainer(cfg)
    if args.eval_only:
        trainer.resume_or_load(resume=args.resume)
        results = DefaultTrainer.test(trainer.cfg, trainer.model)
        if comm.is_main_process():
            save_results(trainer.cfg.OUTPUT_DIR, results)
        return results
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    if comm.is_main_process() and results:
        save_results(trainer.cfg.OUTPUT_DIR, results)
    return results


def cli(argv=None) -> int:
    """Parse arguments, launch the processes, turn known user errors into one-line messages.

    Returns:
        Process exit code.
    """
    args = default_argument_parser().parse_args(argv)
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (ConfigError, CheckpointError, DatasetError, FileNotFoundError, KeyError, ValueError) as e:
        if os.environ.get("CLIPREID_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}\n(set CLIPREID_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
