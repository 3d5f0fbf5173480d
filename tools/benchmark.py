#!/usr/bin/env python
"""Compare methods on the same datasets with the same evaluator: a table, paired intervals, a report.

Each method is a config file (``NAME=CONFIG.yml`` or ``CONFIG.yml``, named after the file). Every
method runs on every ``--datasets`` entry (or on its config's own datasets), with the trailing
``KEY VALUE`` overrides applied to every run, into ``OUTPUT_DIR/<method>/<dataset>`` (``/seed<k>``
with ``--seeds``). The table (method, backbone, dataset, mAP, Rank-1/5/10, mINP, re-ranked
mAP/Rank-1 with --rerank, parameters, GFLOPs per image, training minutes, inference images/s;
mean ± std (min-max) over seeds) is printed and written as ``benchmark.{txt,md,csv,png}``. Each
method is compared with the first (or the ``--compare`` pairs): the difference of mAP, Rank-1 and
mINP with a 95% paired bootstrap interval over identities (``comparison.{txt,md,csv}``). Everything,
with training curves and the queries where methods disagree, goes into one ``report.html``.
Failed runs and, with --collect, missing folders keep their rows, with the path that was looked at.
A run whose folder holds its finished results is read back, never rerun.

    python tools/benchmark.py --methods configs/Market1501/bagtricks_R50.yml \\
        projects/CLIPReID/configs/market1501/vit_clipreid.yml DATASETS.ROOT_DIR /data
    python tools/benchmark.py --methods configs/SyntheticReID/bagtricks_R18.yml \\
        projects/CLIPReID/configs/synthetic/cnn_clipreid_tiny.yml --seeds 3 --jobs 2
    python tools/benchmark.py --methods ... --seeds 3 --collect   # re-tabulate the runs above, run nothing
    # cross-domain: train on each of A, B and test on C and D (the transfer matrix)
    python tools/benchmark.py --methods ... --train-datasets Market1501 DukeMTMC --test-datasets DukeMTMC Market1501
    # any finished run folders (tools/train_net.py OUTPUT_DIRs, benchmark runs), NAME=DIR to name a row
    python tools/benchmark.py --collect output/market_r50 clip=output/market_clipreid --compare market_r50 clip

Backbone labels name the architecture each run built (its benchmark record or run_info.json).

Exit status: 0, 1 when a run failed (missing runs under --collect are not failures), 2 on bad
arguments.
"""

import argparse
import logging
import sys

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import clipreid_plugin  # noqa: F401  (registers components)
from clipreid_plugin.comparison import compare_and_report, parse_method, run_benchmark, table_text, write_outputs
from clipreid_plugin.comparison.pair_tables import comparison_table, transfer_table
from clipreid_plugin.comparison.runner import collect_folders
from clipreid_plugin.comparison.seeds import parse_seeds
from clipreid_plugin.utils.cli import run_tool
from clipreid_plugin.utils.errors import InvalidInputError


def build_parser() -> argparse.ArgumentParser:
    """Returns: the command-line parser."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=[], metavar="[NAME=]CONFIG",
                   help="config files of the methods to compare (name = file stem unless NAME= is given)")
    p.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                   help="run every method on each of these datasets (overrides DATASETS.NAMES/TESTS); "
                        "default: each config's own datasets")
    p.add_argument("--train-datasets", nargs="+", default=None, metavar="NAME",
                   help="cross-domain: train every method on each of these (DATASETS.NAMES) and test it on every "
                        "--test-datasets entry; the transfer matrix goes to transfer.{txt,md,csv} and the report")
    p.add_argument("--test-datasets", nargs="+", default=None, metavar="NAME",
                   help="the test datasets of every run (DATASETS.TESTS); with --train-datasets: cross-domain")
    p.add_argument("--seeds", nargs="+", type=int, default=None, metavar="N",
                   help="run each method x dataset with several seeds (SOLVER.SEED): one number N = seeds 1..N, "
                        "two or more = those seeds; the table shows mean ± std (min-max)")
    p.add_argument("--jobs", type=int, default=1, metavar="K",
                   help="spread the runs over K processes (one run per GPU when there are GPUs, else CPU "
                        "processes sharing the cores)")
    p.add_argument("--compare", nargs=2, action="append", default=None, metavar=("A", "B"),
                   help="compare method B with method A (repeatable); default: every method with the first")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the paired intervals")
    p.add_argument("--output-dir", default="output/benchmark",
                   help="folder of the runs (<dir>/<method>/<dataset>) and of benchmark.{txt,md,csv,png}, "
                        "comparison.*, report.html")
    p.add_argument("--collect", nargs="*", default=None, metavar="[NAME=]RUN_DIR",
                   help="run nothing: tabulate finished runs. Without folders: the --methods runs under "
                        "--output-dir (<dir>/<method>/<dataset>); with folders: those runs (any OUTPUT_DIR of "
                        "tools/train_net.py or of a benchmark run; a folder of seed<k> runs is one row)")
    p.add_argument("--rerank", action="store_true", help="also report k-reciprocal re-ranked mAP and Rank-1")
    p.add_argument("--untrained", action="store_true", help="also evaluate each model before training")
    p.add_argument("--no-stats", action="store_true", help="skip parameters / GFLOPs / images-per-second")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides applied to every run")
    return p


def main(argv=None) -> int:
    """Run or collect the benchmark, print and write the table, the comparisons and the report.

    Returns:
        Exit status (0 ok, 1 a run failed); bad arguments raise the toolkit's errors (exit 2).
    """
    args = build_parser().parse_args(argv)
    if len(args.opts) % 2:
        raise InvalidInputError(f"Overrides must be KEY VALUE pairs, got {args.opts}.")
    if args.jobs < 1:
        raise InvalidInputError(f"--jobs {args.jobs}: give 1 or more processes.")
    if args.datasets and (args.train_datasets or args.test_datasets):
        raise InvalidInputError("Give --datasets (train and test on each) or --train-datasets / --test-datasets "
                                "(cross-domain), not both.")
    seeds = parse_seeds(args.seeds)
    if args.collect:  # run folders given
        if args.methods:
            raise InvalidInputError("Give --methods (with a bare --collect) or run folders after --collect, not both.")
        records = collect_folders(args.collect)
    else:
        if not args.methods:
            raise InvalidInputError("Nothing to compare: give --methods CONFIG ... (or --collect RUN_DIR ...).")
        methods = [parse_method(m) for m in args.methods]
        records = run_benchmark(methods, args.output_dir, args.opts, datasets=args.datasets,
                                collect=args.collect is not None, evaluate_untrained=args.untrained,
                                rerank=args.rerank, measure=not args.no_stats, seeds=seeds, jobs=args.jobs,
                                train_datasets=args.train_datasets, test_datasets=args.test_datasets)
    paths = write_outputs(records, args.output_dir)
    comparisons, more = compare_and_report(records, args.output_dir,
                                           [tuple(p) for p in args.compare] if args.compare else None,
                                           num_resamples=args.resamples)
    paths.update(more)
    print("\n" + table_text(records))
    if comparisons:
        print(f"\nPaired differences B - A (points; [95% interval], identity bootstrap; * = excludes 0):\n"
              + comparison_table(comparisons))
    transfer = transfer_table(records)
    if transfer:
        print("\nTransfer matrix (train -> test):\n" + transfer)
    logging.getLogger("clipreid_plugin").info("Wrote " + ", ".join(paths.values()))
    print(f"\nReport: {paths['report.html']}")
    return 1 if any(r["status"].startswith("failed") for r in records) else 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
