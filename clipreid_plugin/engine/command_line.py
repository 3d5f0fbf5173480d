"""The command line of ``tools/train_net.py`` (after detectron2's ``default_argument_parser``):
its flags, accepted anywhere among the trailing ``KEY VALUE`` overrides, and the run's config."""

import argparse
import sys
from typing import Optional

from clipreid_plugin.config import CfgNode, load_cfg

__all__ = ["default_argument_parser", "setup_cfg"]


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
