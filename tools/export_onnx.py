#!/usr/bin/env python
"""Export a trained model's embedding forward to ONNX and check it against PyTorch.

    pip install 'clipreid_plugin[onnx]'     # onnx (writes the file) + onnxruntime (the check)
    python tools/export_onnx.py --config-file output/run/config.yaml --weights output/run/model_final.pth \\
        --output model.onnx

Graph: ``images`` (B, 3, H, W) float32, normalised as in testing (resize to INPUT.SIZE_TEST,
``(x/255 - PIXEL_MEAN) / PIXEL_STD``) -> ``embedding`` (B, D); B is dynamic. Models with SIE also
take ``camids`` / ``viewids`` (B,) int64. With TEST.FLIP.ENABLED the flip averaging is part of
the graph. After exporting, onnxruntime runs the file on random inputs and the largest absolute
difference to PyTorch is reported (the tool fails above --atol; --no-check skips it).
"""

import argparse
import logging
import sys

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import clipreid_plugin  # noqa: F401  (registers every built-in component)
from clipreid_plugin.utils.cli import run_tool
from clipreid_plugin.usertools.export import DEFAULT_OPSET, check_onnx, export_onnx, require_onnx
from clipreid_plugin.usertools.extract import FeatureExtractor
from clipreid_plugin.utils.file_io import check_writable


def build_parser() -> argparse.ArgumentParser:
    """Returns: the argument parser of this tool."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=None, metavar="FILE",
                   help="the run's config (OUTPUT_DIR/config.yaml); default: the config stored in --weights")
    p.add_argument("--weights", default="", metavar="FILE", help="checkpoint; default MODEL.WEIGHTS")
    p.add_argument("--output", required=True, metavar="FILE.onnx", help="ONNX file to write")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--atol", type=float, default=1e-4, help="largest accepted |onnxruntime - PyTorch|")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=None, help="config overrides: KEY VALUE ...")
    return p


def main(argv=None) -> None:
    """Parse the arguments, export, check."""
    args = build_parser().parse_args(argv)
    require_onnx(check=not args.no_check)  # before loading anything: one line naming the extra
    logger = logging.getLogger("clipreid_plugin")
    check_writable(args.output)  # before the work, not after it
    # export on the CPU: the graph is device-independent and onnxruntime checks it on the CPU
    ex = FeatureExtractor(args.config_file, args.weights or None, opts=args.opts, device="cpu")
    size = ex.cfg.INPUT.SIZE_TEST
    wrapper = export_onnx(ex.model, args.output, size, opset=args.opset, flip=ex.cfg.TEST.FLIP.ENABLED)
    logger.info(f"Wrote {args.output}: inputs {wrapper.input_names} at {size[0]}x{size[1]}, output 'embedding'.")
    if args.no_check:
        return
    diff = check_onnx(args.output, wrapper, size)
    print(f"onnxruntime vs PyTorch: max abs difference {diff:.2e} (tolerance {args.atol:g}).")
    if not diff <= args.atol:
        raise ValueError(f"The ONNX model's output differs from PyTorch's by {diff:.2e} > --atol {args.atol:g}: "
                         f"try another --opset, or report the model type.")


if __name__ == "__main__":
    sys.exit(run_tool(main))
