"""Long-run coverage of the paired bootstrap intervals: identities vs images resampled.

The problem of tests/comparison/test_paired_bootstrap.py, without the evaluator (its per-query
numbers are exactly these): IDENTITIES identities with 1-5 queries each; method B beats method
A by 50 AP points on every query of an "improved" identity (probability P), and ties elsewhere,
so the true mAP difference is 50 P points. Each repetition draws a new sample, computes the 95%
interval twice (resampling identities, as tools/benchmark.py does, and resampling single
images) and counts whether it covers the truth. The test checks 100 repetitions; this runs more,
to show the rate each method converges to.

    python benchmarks/bootstrap_coverage.py --repetitions 2000
"""

import argparse
import os
import sys

# tools/ holds the process defaults every command line sets before torch loads
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from cli_defaults import set_cli_defaults  # noqa: E402

set_cli_defaults()  # before numpy / torch load OpenMP: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import numpy as np

from clipreid_plugin.comparison.paired import cluster_bootstrap


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repetitions", type=int, default=2000)
    p.add_argument("--identities", type=int, default=150)
    p.add_argument("--p", type=float, default=0.4, help="share of improved identities")
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    truth = 50 * args.p
    covered = {"identities": 0, "images": 0}
    for rep in range(args.repetitions):
        q_ids = np.repeat(np.arange(args.identities), rng.integers(1, 6, args.identities))
        diff = np.where(rng.random(args.identities)[q_ids] < args.p, 50.0, 0.0)
        for name, clusters in (("identities", q_ids), ("images", np.arange(len(q_ids)))):
            res = cluster_bootstrap(diff, clusters, seed=rep)
            covered[name] += res["low"][0] <= truth <= res["high"][0]
    for name, n in covered.items():
        print(f"resampling {name:10s}: the 95% interval covered the true difference in {n} of {args.repetitions} "
              f"repetitions ({100 * n / args.repetitions:.1f}%)")


if __name__ == "__main__":
    main()
