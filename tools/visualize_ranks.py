#!/usr/bin/env python
"""Draw ranked lists from a finished evaluation: query, then its top-k gallery images
(green border = same identity, red = different identity, distance under each image).

    # 1. evaluate with the rankings saved (writes OUTPUT_DIR/<dataset>_results.npz)
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth \\
        TEST.SAVE_RESULTS True TEST.SAVE_TOPK 10
    # 2. the 8 worst queries (lowest AP within the top 10), then the 8 best
    python tools/visualize_ranks.py --results OUTPUT_DIR/Market1501_results.npz --output worst.png \\
        --order worst --num-queries 8 --topk 10
    python tools/visualize_ranks.py --results OUTPUT_DIR/Market1501_results.npz --output best.png --order best
"""

import argparse
import logging
import sys

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

from clipreid_plugin.utils.cli import run_tool
from clipreid_plugin.usertools.rank_strips import ORDERS, StripLayout, visualize_ranking


def build_parser() -> argparse.ArgumentParser:
    """Returns: the argument parser of this tool."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, metavar="FILE.npz",
                   help="OUTPUT_DIR/<dataset>_results.npz of an evaluation run with TEST.SAVE_RESULTS True")
    p.add_argument("--output", required=True, metavar="FILE.png", help="picture to write")
    p.add_argument("--num-queries", type=int, default=10, help="rows (queries) to draw")
    p.add_argument("--topk", type=int, default=10, help="gallery images per row (at most TEST.SAVE_TOPK)")
    p.add_argument("--order", default="index", choices=ORDERS,
                   help="index: dataset order; worst / best: by AP within the top-k")
    p.add_argument("--queries", type=int, nargs="+", default=None, metavar="I",
                   help="draw these query indices instead (overrides --order)")
    p.add_argument("--thumb-height", type=int, default=128, metavar="H", help="thumbnail box height in pixels")
    p.add_argument("--thumb-width", type=int, default=None, metavar="W",
                   help="thumbnail box width in pixels (default: from the crops' median aspect ratio); "
                        "crops always keep their aspect ratio inside the box")
    return p


def main(argv=None) -> None:
    """Parse the arguments and draw the picture."""
    args = build_parser().parse_args(argv)
    rows = visualize_ranking(args.results, args.output, num_queries=args.num_queries, topk=args.topk,
                             order=args.order, query_indices=args.queries,
                             layout=StripLayout(thumb_height=args.thumb_height, thumb_width=args.thumb_width))
    logging.getLogger("clipreid_plugin").info(f"Drew queries {rows} to {args.output}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
