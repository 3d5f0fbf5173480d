#!/usr/bin/env python
"""The quick-start job: train and evaluate methods on the built-in synthetic dataset.

For each method it evaluates the untrained model, trains it, evaluates again, and prints one
table so that learning is visible at a glance (mAP far above the untrained model's). It is
``tools/benchmark.py --untrained`` over the demo configs (same runner, same table), writing
``demo_results.{md,csv,txt,png}`` to the output folder.

    python tools/demo.py                      # every demo method
    python tools/demo.py --methods bagtricks  # one of them
"""

import argparse
import os
import sys

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import clipreid_plugin  # noqa: E402,F401  (registers components)
from clipreid_plugin.comparison import MethodSpec, run_benchmark, table_text, write_outputs  # noqa: E402
from clipreid_plugin.utils.cli import run_tool  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# method name -> demo config (together they train in under 4 minutes on 2 idle CPU cores)
DEMO_METHODS = {
    "bagtricks": "configs/SyntheticReID/bagtricks_R18.yml",
    "clipreid": "projects/CLIPReID/configs/synthetic/cnn_clipreid_tiny.yml",
}


def main(argv=None) -> int:
    """Run the demo methods; print and write the untrained-vs-trained table.

    Returns:
        Exit status (1 when a method failed).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), choices=list(DEMO_METHODS))
    parser.add_argument("--output-dir", default="output/demo")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides applied to every method")
    args = parser.parse_args(argv)
    methods = [MethodSpec(name, os.path.join(REPO, DEMO_METHODS[name])) for name in args.methods]
    records = run_benchmark(methods, args.output_dir, args.opts, evaluate_untrained=True)
    write_outputs(records, args.output_dir, stem="demo_results")
    print("\nResults on the synthetic dataset (percent):\n" + table_text(records))
    return 1 if any(r["status"] != "ok" for r in records) else 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
