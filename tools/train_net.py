#!/usr/bin/env python
"""Train or evaluate any registered ReID method from a YAML config.

    python tools/train_net.py --config-file configs/SyntheticReID/bagtricks_R18.yml
    python tools/train_net.py --config-file projects/CLIPReID/configs/veri_vit.yml DATASETS.ROOT_DIR /data
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS path/to/model.pth
    python tools/train_net.py --config-file CFG --num-gpus 4        (or: torchrun --nproc-per-node 4 ...)
    python tools/train_net.py --config-file fastreid/configs/Market1501/sbs_R50-ibn.yml   (a fast-reid config)

Run ``--help`` for every flag. Trailing ``KEY VALUE`` pairs override the config.
"""

import atexit
import os
import shutil
import sys
import tempfile

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import clipreid_plugin  # noqa: F401  (registers the host's components; plugins load with the config)
from clipreid_plugin.engine import default_argument_parser, default_setup, launch, run_training, setup_cfg
from clipreid_plugin.usertools.fastreid_config import (
    convert_fastreid_config_with_notes, converted_yaml, is_fastreid_config,
)
from clipreid_plugin.utils.cli import run_tool
from clipreid_plugin.utils.file_io import atomic_write_text


def main(args):
    """Per-process entry point: build the config, then train or evaluate (:func:`run_training`).

    Returns:
        The evaluation results ``{dataset: metrics}`` (main process).
    """
    cfg = default_setup(setup_cfg(args), args)
    return run_training(cfg, eval_only=args.eval_only, resume=args.resume)["results"]


def use_fastreid_config(args) -> None:
    """When ``--config-file`` is a fast-reid config, convert it (the notes and unmapped keys printed)
    and point ``args.config_file`` at the converted file (kept until this process exits)."""
    path = args.config_file
    if not path or not is_fastreid_config(path):
        return
    ours, unmapped, notes = convert_fastreid_config_with_notes(path)
    folder = tempfile.mkdtemp(prefix="fastreid-config-")
    atexit.register(shutil.rmtree, folder, True)
    args.config_file = os.path.join(folder, os.path.basename(path))
    atomic_write_text(args.config_file, converted_yaml(ours, unmapped, path))
    print(f"{path} is a fast-reid config: converted, {len(ours)} keys mapped "
          f"(tools/convert_fastreid_config.py writes the converted file).")
    for note in notes:
        print(f"  note: {note}")
    for u in unmapped:
        print(f"  not mapped: {u.key}: {u.value!r} -- {u.reason}")


def cli(argv=None) -> int:
    """Parse arguments, launch the processes, turn known user errors into one-line messages.

    Returns:
        Process exit code (2 after a user error such as a config typo or a missing dataset).
    """
    args = default_argument_parser().parse_args(argv)

    def run():
        use_fastreid_config(args)
        return launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                      dist_url=args.dist_url, args=(args,))

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(cli())
