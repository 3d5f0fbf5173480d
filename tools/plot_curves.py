#!/usr/bin/env python
"""Plot training curves (losses, learning rate, evaluation metrics) from a run's metrics file.

    python tools/plot_curves.py --metrics output/run/metrics.json --output curves.png

One panel per group (losses, learning rate, evaluation ``<dataset>/<metric>``) and training
phase: CLIP-ReID's stage 1 (prompt learning) gets its own panels on its own epoch axis, above
the main loop's. Drawn with matplotlib: pip install 'clipreid_plugin[plots]'.
"""

import argparse
import logging
import sys

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

from clipreid_plugin.utils.cli import run_tool
from clipreid_plugin.usertools.training_curves import plot_training_curves
from clipreid_plugin.utils.file_io import check_writable


def build_parser() -> argparse.ArgumentParser:
    """Returns: the argument parser of this tool."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metrics", required=True, metavar="FILE", help="OUTPUT_DIR/metrics.json (JSON lines)")
    p.add_argument("--output", required=True, metavar="FILE.png", help="picture to write")
    p.add_argument("--panel-size", type=int, nargs=2, default=[720, 240], metavar=("W", "H"),
                   help="size of one panel in pixels")
    return p


def main(argv=None) -> None:
    """Parse the arguments and draw the picture."""
    args = build_parser().parse_args(argv)
    check_writable(args.output)  # before the work, not after it
    panels = plot_training_curves(args.metrics, args.output, panel_size=tuple(args.panel_size))
    logging.getLogger("clipreid_plugin").info(f"Drew {', '.join(panels)} to {args.output}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
