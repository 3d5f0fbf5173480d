"""Speed of the paired identity bootstrap at MSMT17 size, against a plain per-resample loop.

MSMT17's test set has 11,659 queries of 3,060 identities. Both versions resample identities with
replacement (the queries of a drawn identity all enter the resample) 1,000 times and compute the
mean difference of 3 metrics (mAP, Rank-1, mINP contributions) per resample:

  * vectorised: clipreid_plugin.comparison.paired.cluster_bootstrap (a resamples x identities
    count matrix, then two matrix products);
  * loop: for each resample, draw identities, gather their queries, take the means (what one
    writes first; measured on --loop-resamples resamples and scaled to the full count).

Both run in this process on the same data; the ratio is printed. The issue's target is under
5 s on 2 CPU cores.

    python benchmarks/bootstrap_speed.py
    python benchmarks/bootstrap_speed.py --queries 3368 --identities 751   # Market-1501 size
"""

import argparse
import os
import sys
import time

# tools/ holds the process defaults every command line sets before torch loads
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from cli_defaults import set_cli_defaults  # noqa: E402

set_cli_defaults()  # before numpy / torch load OpenMP: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import numpy as np  # noqa: E402

from clipreid_plugin.comparison.paired import cluster_bootstrap  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import machine_line  # noqa: E402


def loop_bootstrap(values: np.ndarray, clusters: np.ndarray, num_resamples: int, seed: int = 0):
    """The straightforward version: one resample at a time, queries gathered per drawn identity."""
    ids = np.unique(clusters)
    members = [np.flatnonzero(clusters == i) for i in ids]
    rng = np.random.default_rng(seed)
    means = np.empty((num_resamples, values.shape[1]))
    for b in range(num_resamples):
        drawn = rng.integers(0, len(ids), len(ids))
        rows = np.concatenate([members[i] for i in drawn])
        means[b] = values[rows].mean(0)
    return np.percentile(means, [2.5, 97.5], axis=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=11659)
    p.add_argument("--identities", type=int, default=3060)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--loop-resamples", type=int, default=100, help="resamples of the loop actually timed")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the vectorised version (best kept)")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    # every identity has at least one query (as in MSMT17), the rest spread at random
    clusters = np.sort(np.concatenate([np.arange(args.identities),
                                       rng.integers(0, args.identities, args.queries - args.identities)]))
    values = np.stack([rng.normal(1.0, 20.0, args.queries), rng.choice([-100.0, 0.0, 100.0], args.queries),
                       rng.normal(0.5, 15.0, args.queries)], 1)  # AP, Rank-1 and INP differences (points)
    print(machine_line())
    print(f"{args.queries} queries of {len(np.unique(clusters))} identities x {args.resamples} resamples x "
          f"{values.shape[1]} metrics")

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        res = cluster_bootstrap(values, clusters, args.resamples)
        times.append(time.perf_counter() - start)
    vec = min(times)
    start = time.perf_counter()
    low_high = loop_bootstrap(values, clusters, args.loop_resamples)
    loop = (time.perf_counter() - start) * args.resamples / args.loop_resamples
    print(f"vectorised: {vec:.4g} s (best of {args.repeats}: {', '.join(f'{t:.4g}' for t in times)})")
    print(f"loop:       {loop:.4g} s ({args.loop_resamples} resamples timed, scaled to {args.resamples})")
    print(f"ratio loop / vectorised: {loop / vec:.1f}x")
    print(f"interval of the first metric: vectorised [{res['low'][0]:.2f}, {res['high'][0]:.2f}], "
          f"loop ({args.loop_resamples} resamples) [{low_high[0, 0]:.2f}, {low_high[1, 0]:.2f}]")
    print(f"target: < 5 s -> {'met' if vec < 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
