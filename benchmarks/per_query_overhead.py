"""What per-query results cost the evaluator: the ranking alone, then with each extra.

On random distances of a Market-1501-sized problem (3,368 queries x 15,913 gallery images, 751
identities, 6 cameras; --scale to change), in this process and in this order, best of --repeats:

  * plain: RankAccumulator over blocks of the distance matrix (what every evaluation does);
  * + per-query file: the same, then writing ``<dataset>_per_query.npz`` (always done);
  * + top-10: RankAccumulator keeping each query's 10 best items (TEST.PER_QUERY.TOPK 10);
  * + camera pairs: plain, and every block ranked again per gallery camera
    (TEST.PER_QUERY.CAMERA_PAIRS), as ReidEvaluator does it.

Prints seconds and the ratio of each to plain. Distance computation and feature extraction, which
dominate a real evaluation, are not included: the ratios are an upper bound of the slowdown.

    python benchmarks/per_query_overhead.py
    python benchmarks/per_query_overhead.py --scale 3.5   # about MSMT17's query x gallery size
"""

import argparse
import os
import sys
import tempfile
import time

# tools/ holds the process defaults every command line sets before torch loads
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from cli_defaults import set_cli_defaults  # noqa: E402

set_cli_defaults()  # before numpy / torch load OpenMP: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from clipreid_plugin.evaluation.rank import RankAccumulator  # noqa: E402
from clipreid_plugin.evaluation.results import save_per_query_npz  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import machine_line  # noqa: E402


def rank(dist, qp, qc, gp, gc, topk=0, camera_pairs=False, step=512):
    acc = RankAccumulator(qp, qc, gp, gc, topk=topk)
    per_cam = []
    if camera_pairs:
        for cam in torch.unique(gc).tolist():
            cols = torch.nonzero(gc == cam).flatten()
            per_cam.append((cols, RankAccumulator(qp, qc, gp[cols], gc[cols], max_rank=1)))
    for s in range(0, dist.shape[0], step):
        block = dist[s:s + step]
        acc.add(s, block)
        for cols, cam_acc in per_cam:
            cam_acc.add(s, block.index_select(1, cols))
    for _, cam_acc in per_cam:
        cam_acc.per_query()
    return acc.result()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="multiply the query and gallery counts")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    nq, ng, nid, ncam = int(3368 * args.scale), int(15913 * args.scale), 751, 6
    qp, gp = torch.randint(0, nid, (nq,), generator=g), torch.randint(0, nid, (ng,), generator=g)
    qc, gc = torch.randint(0, ncam, (nq,), generator=g), torch.randint(0, ncam, (ng,), generator=g)
    dist = torch.rand(nq, ng, generator=g)
    paths = [f"/data/Market-1501-v15.09.15/query/{i % nid:04d}_c{i % ncam + 1}s1_{i:06d}_00.jpg" for i in range(nq)]
    folder = tempfile.mkdtemp()

    def with_file():
        res = rank(dist, qp, qc, gp, gc)
        ap = np.full(nq, np.nan)
        ap[res.valid] = res.all_AP
        save_per_query_npz(os.path.join(folder, "x_per_query.npz"), {
            "query_pids": qp.numpy(), "query_camids": qc.numpy(), "query_paths": paths, "ap": ap, "inp": ap,
            "first_rank": res.first_rank})

    parts = {"plain": lambda: rank(dist, qp, qc, gp, gc), "+ per-query file": with_file,
             "+ top-10": lambda: rank(dist, qp, qc, gp, gc, topk=10),
             "+ camera pairs": lambda: rank(dist, qp, qc, gp, gc, camera_pairs=True)}
    print(machine_line())
    print(f"{nq} queries x {ng} gallery, {nid} identities, {ncam} cameras; torch threads {torch.get_num_threads()}")
    best = {}
    for name, fn in parts.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        best[name] = min(times)
    for name, t in best.items():
        print(f"{name:18s} {t:7.3f} s   x{t / best['plain']:.2f}")


if __name__ == "__main__":
    main()
