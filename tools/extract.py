#!/usr/bin/env python
"""Embed a folder (or a list) of images with a trained model and save the features.

    python tools/extract.py --weights output/run/model_final.pth --input my_gallery/ --output gallery_feats.npz

A checkpoint of this toolkit carries its config; pass ``--config-file`` for other weights (a
reference CLIP-ReID file) or to change it. Neither training data nor the pretrained weights
file the model was trained from are needed.

The output is an ``.npz`` with ``feats`` (N, D) float32 (raw embeddings, as the model returns
them) and ``paths`` (N,). Rank it with ``tools/search.py``. Trailing ``KEY VALUE`` pairs
override the config.
"""

import argparse
import logging
import sys

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import clipreid_plugin  # noqa: F401  (registers every built-in component)
from clipreid_plugin.utils.cli import run_tool
from clipreid_plugin.usertools.extract import FeatureExtractor, save_features
from clipreid_plugin.utils.file_io import check_writable


def build_parser() -> argparse.ArgumentParser:
    """Returns: the argument parser of this tool."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=None, metavar="FILE",
                   help="the run's config (OUTPUT_DIR/config.yaml) or any config file; default: the config stored "
                        "in --weights")
    p.add_argument("--weights", default="", metavar="FILE",
                   help="checkpoint (model_final.pth, a reference CLIP-ReID .pth); default MODEL.WEIGHTS")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="image files and/or folders (searched recursively)")
    p.add_argument("--output", required=True, metavar="FILE.npz", help="feature file to write")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--num-workers", type=int, default=2, help="image reading processes")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: MODEL.DEVICE)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=None, help="config overrides: KEY VALUE ...")
    return p


def main(argv=None) -> None:
    """Parse the arguments, embed the images, write the feature file."""
    args = build_parser().parse_args(argv)
    check_writable(args.output)  # before the work, not after it
    ex = FeatureExtractor(args.config_file, args.weights or None, opts=args.opts, device=args.device)
    feats, paths = ex.embed(args.input, batch_size=args.batch_size, num_workers=args.num_workers)
    save_features(args.output, feats, paths)
    logging.getLogger("clipreid_plugin").info(f"Wrote {feats.shape[0]} x {feats.shape[1]} features to {args.output}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
