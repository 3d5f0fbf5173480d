#!/usr/bin/env python
"""Convert a fast-reid YAML config into this toolkit's, naming the keys it cannot map.

    python tools/convert_fastreid_config.py fastreid/configs/Market1501/bagtricks_R50.yml \\
        --output configs/converted/market_bagtricks_R50.yml
    python tools/train_net.py --config-file configs/converted/market_bagtricks_R50.yml

fast-reid's ``_BASE_`` chain is followed and flattened into one file. Renamed keys
(SOLVER.MAX_EPOCH -> SOLVER.MAX_EPOCHS, SOLVER.OPT -> SOLVER.OPTIMIZER_NAME, ...) and values
(pixel mean/std on 0..255 -> 0..1, MultiStepLR -> WarmupMultiStepLR, NaiveIdentitySampler ->
PKSampler, GlobalAvgPool -> avg) are converted; every key without an equivalent is printed and
listed at the top of the written file. The written config is loaded once to check it. The
table of keys is in docs/RECIPES.md.
"""

import argparse
import os
import sys

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

from clipreid_plugin.usertools.fastreid_config import convert_fastreid_config, converted_yaml
from clipreid_plugin.utils.cli import run_tool
from clipreid_plugin.utils.errors import InvalidInputError
from clipreid_plugin.utils.file_io import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    """Returns: the argument parser of this tool."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="FASTREID.yml", help="a fast-reid config file")
    p.add_argument("--output", required=True, metavar="OURS.yml", help="the config to write (folder created)")
    p.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    return p


def main(argv=None) -> None:
    """Parse the arguments, convert, write, check that the result loads, report unmapped keys."""
    args = build_parser().parse_args(argv)
    if os.path.exists(args.output) and not args.force:
        raise InvalidInputError(f"{args.output} exists; pass --force to overwrite it.")
    ours, unmapped = convert_fastreid_config(args.config)
    text = converted_yaml(ours, unmapped, args.config)
    atomic_write_text(args.output, text)
    from clipreid_plugin.config import load_cfg

    load_cfg(args.output)  # a mapping mistake would show here, as a one-line config error
    print(f"Wrote {args.output}: {len(ours)} keys mapped.")
    if unmapped:
        print(f"Not mapped ({len(unmapped)}; listed at the top of {args.output}):")
        for u in unmapped:
            print(f"  {u.key}: {u.value!r} -- {u.reason}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
