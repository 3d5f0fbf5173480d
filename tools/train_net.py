#!/usr/bin/env python
"""Train or evaluate any registered ReID method from a YAML config.

    python tools/train_net.py --config-file configs/SyntheticReID/bagtricks_R18.yml
    python tools/train_net.py --config-file projects/CLIPReID/configs/veri_vit.yml DATASETS.ROOT_DIR /data
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS path/to/model.pth
    python tools/train_net.py --config-file CFG --num-gpus 4        (or: torchrun --nproc-per-node 4 ...)

Run ``--help`` for every flag. Trailing ``KEY VALUE`` pairs override the config.
"""

import sys

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import clipreid_plugin  # noqa: F401  (registers the host's components; plugins load with the config)
from clipreid_plugin.engine import default_argument_parser, default_setup, launch, run_training, setup_cfg
from clipreid_plugin.utils.cli import run_tool


def main(args):
    """Per-process entry point: build the config, then train or evaluate (:func:`run_training`).

    Returns:
        The evaluation results ``{dataset: metrics}`` (main process).
    """
    cfg = default_setup(setup_cfg(args), args)
    return run_training(cfg, eval_only=args.eval_only, resume=args.resume)["results"]


def cli(argv=None) -> int:
    """Parse arguments, launch the processes, turn known user errors into one-line messages.

    Returns:
        Process exit code (2 after a user error such as a config typo or a missing dataset).
    """
    args = default_argument_parser().parse_args(argv)
    return run_tool(lambda: launch(main, args.num_gpus, num_machines=args.num_machines,
                                   machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,)))


if __name__ == "__main__":
    sys.exit(cli())
