#!/usr/bin/env python
"""The quick-start job: train and evaluate methods on the built-in synthetic dataset.

For each method it evaluates the untrained model, trains it, evaluates again, and prints one
table so that learning is visible at a glance (mAP far above the untrained model's). It is
``tools/benchmark.py --untrained`` over the demo configs (same runner, same table), writing
``demo_results.{md,csv,txt,png}`` to the output folder; each method's run folder also gets its
training curves (``training_curves.png``: losses, learning rate, and the evaluations every
``TEST.EVAL_PERIOD`` epochs with the untrained model's at epoch 0), a rank strip
(``rank_strip.png``: four queries and their top 8) and, with the ``[tensorboard]`` extra,
TensorBoard event files. It ends by listing every file it wrote.

    python tools/demo.py                      # every demo method
    python tools/demo.py --methods bagtricks  # one of them
"""

import argparse
import os
import sys
import time
from typing import Dict, List

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import clipreid_plugin  # noqa: E402,F401  (registers components)
from clipreid_plugin.comparison import (MethodSpec, compare_and_report, run_benchmark, table_text,  # noqa: E402
                                       write_outputs)
from clipreid_plugin.usertools.rank_strips import StripLayout, load_ranking, visualize_ranking  # noqa: E402
from clipreid_plugin.usertools.training_curves import plot_training_curves, read_metrics  # noqa: E402
from clipreid_plugin.utils.cli import run_tool  # noqa: E402
from clipreid_plugin.utils.errors import MissingDependencyError  # noqa: E402
from clipreid_plugin.utils.optional import extra_hint  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# method name -> demo config (together they train in under 4 minutes on 2 idle CPU cores)
DEMO_METHODS = {
    "bagtricks": "configs/SyntheticReID/bagtricks_R18.yml",
    "clipreid": "projects/CLIPReID/configs/synthetic/cnn_clipreid_tiny.yml",
}
# for the pictures: evaluations along training (curves) and the saved rankings (rank strip);
# given before the user's overrides, which win
DEMO_OPTS = ["TEST.EVAL_PERIOD", "4", "TEST.SAVE_RESULTS", "True", "TEST.SAVE_TOPK", "10"]


def untrained_record(record: Dict) -> Dict:
    """The untrained evaluation as a metrics.json evaluation record drawn at epoch 0 (an evaluation
    of epoch e sits at e + 1, after that epoch's training)."""
    flat = {f"{ds}/{k}": v for ds, metrics in record["untrained"].items() for k, v in metrics.items()
            if isinstance(v, (int, float))}
    return {"iteration": -1, "epoch": -1, **flat}


def method_pictures(record: Dict) -> List[str]:
    """Draw a finished method's training curves and rank strip into its run folder.

    Returns:
        The files written.
    """
    out = record["output_dir"]
    written = []
    curves = os.path.join(out, "training_curves.png")
    try:
        plot_training_curves([untrained_record(record)] + read_metrics(os.path.join(out, "metrics.json")), curves)
        written.append(curves)
    except MissingDependencyError as e:
        print(f"Skipped {curves}: {e}")
    for ds in record["datasets"]:
        results = os.path.join(out, f"{ds}_results.npz")
        if os.path.isfile(results):
            strip = os.path.join(out, "rank_strip.png")
            nq = load_ranking(results)["topk_indices"].shape[0]
            visualize_ranking(results, strip, topk=8, query_indices=sorted({nq * i // 4 for i in range(4)}),
                              layout=StripLayout(thumb_height=96))
            written.append(strip)
    return written


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
    start = time.time()
    records = run_benchmark(methods, args.output_dir, DEMO_OPTS + list(args.opts), evaluate_untrained=True)
    write_outputs(records, args.output_dir, stem="demo_results")
    for record in records:
        if record["status"] == "ok":
            method_pictures(record)
    print("\nResults on the synthetic dataset (percent):\n" + table_text(records))
    report = compare_and_report(records, args.output_dir, title="Demo")[1]["report.html"]
    print_written_files(args.output_dir, start)
    print(f"\nReport (open it in a browser): {report}")
    return 1 if any(r["status"] != "ok" for r in records) else 0


def print_written_files(folder: str, since: float) -> List[str]:
    """Print every file under ``folder`` written since ``since`` (a time.time()), and how to open
    the TensorBoard events.

    Returns:
        The files, sorted.
    """
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(folder) for f in names
                   if os.path.getmtime(os.path.join(root, f)) >= since - 1)
    print(f"\nFiles written ({len(files)}):\n" + "\n".join(f"  {f}" for f in files))
    if any(os.path.basename(f).startswith("events.out.tfevents") for f in files):
        print(f"TensorBoard: tensorboard --logdir {folder}   (then open http://localhost:6006)")
    else:
        print(f"No TensorBoard events: {extra_hint('tensorboard', 'tensorboard')} adds them.")
    return files


if __name__ == "__main__":
    sys.exit(run_tool(main))
