"""Speed and memory of evaluation at Market-1501 and MSMT17 scale (random features).

Compares, in one run and on the same data:
  * metrics-baseline: the reference evaluator (full (Q, G) distance matrix, full np.argsort,
    per-query numpy loop; CLIP-ReID / TransReID utils/metrics.py);
  * metrics-ours: this package's blocked evaluator (CPU, or GPU with --device cuda);
  * rerank-dense: the reference re-ranking (dense (N, N) matrices; utils/reranking.py);
  * rerank-ours: this package's sparse re-ranking followed by the blocked metrics.
Each part runs in its own subprocess so that its peak resident memory (ru_maxrss) is its own;
"peak" below is that peak minus the memory the process held before the part started (the
features). GPU parts also report torch.cuda.max_memory_allocated.

Examples:
  python benchmarks/eval_scale.py --datasets market --parts all
  python benchmarks/eval_scale.py --datasets msmt --parts metrics-ours,rerank-ours
  python benchmarks/eval_scale.py --scale 0.1            # quick run at 10% of the sizes
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

# tools/ holds the process defaults every command line sets before torch loads
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from cli_defaults import set_cli_defaults  # noqa: E402

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import numpy as np
import torch

# The reference-style baseline is development tooling kept outside the installed package (tools/).
from parity_harness.reference_eval import (reference_euclidean_distance, reference_eval_func,  # noqa: E402
                                           reference_re_ranking)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import write_json  # noqa: E402


SIZES = {  # (num_query, num_gallery, num_test_identities, num_cameras)
    "market": (3368, 15913, 751, 6),
    "msmt": (11659, 82161, 3060, 15),
}
PARTS = ("metrics-baseline", "metrics-ours", "rerank-dense", "rerank-ours")


def make_problem(name: str, scale: float, dim: int, seed: int = 0):
    """Random clustered features: identity centre + noise, every query identity in the gallery."""
    nq, ng, nid, ncam = SIZES[name]
    nq, ng, nid = max(2, int(nq * scale)), max(10, int(ng * scale)), max(2, int(nid * scale))
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(nid, dim, generator=g)
    q_pids = torch.randint(0, nid, (nq,), generator=g)
    g_pids = torch.cat([torch.arange(nid), torch.randint(0, nid, (ng - nid,), generator=g)])
    feats = torch.cat([centres[q_pids], centres[g_pids]])
    feats.add_(torch.randn(feats.shape, generator=g), alpha=4.0)  # hard enough that mAP is not 100%
    camids = torch.randint(0, ncam, (nq + ng,), generator=g)
    return feats[:nq], feats[nq:], q_pids, g_pids, camids[:nq], camids[nq:]


# ------------------------------- reference-style baselines -------------------------------------
# ------------------------------------ one part ------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_part(args) -> dict:
    from clipreid_plugin.evaluation.distance import normalize_features, pairwise_distance_chunks
    from clipreid_plugin.evaluation.rank import rank_distance_chunks
    from clipreid_plugin.evaluation.rerank import re_ranking_chunks

    torch.set_num_threads(args.threads)
    qf, gf, qp, gp, qc, gc = make_problem(args.dataset, args.scale, args.dim)
    qf, gf = normalize_features(qf), normalize_features(gf)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        qf, gf = qf.to(dev), gf.to(dev)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _rss_mb()
    t0 = time.perf_counter()
    part = args.run_part
    dist_secs = 0.0  # time spent computing plain distances (the float32 GEMM both sides share)
    if part == "metrics-baseline":
        distmat = reference_euclidean_distance(qf.cpu(), gf.cpu())
        dist_secs = time.perf_counter() - t0
        cmc, mAP = reference_eval_func(distmat, qp.numpy(), gp.numpy(), qc.numpy(), gc.numpy())
    elif part == "rerank-dense":
        dist = reference_re_ranking(qf.cpu(), gf.cpu(), args.k1, args.k2, 0.3)
        cmc, mAP = reference_eval_func(dist, qp.numpy(), gp.numpy(), qc.numpy(), gc.numpy())
    else:
        if part == "metrics-ours":
            def timed(gen):
                nonlocal dist_secs
                while True:
                    t = time.perf_counter()
                    item = next(gen, None)
                    if cuda:
                        torch.cuda.synchronize()
                    dist_secs += time.perf_counter() - t
                    if item is None:
                        return
                    yield item
            chunks = timed(pairwise_distance_chunks(qf, gf, memory_budget_mb=args.budget_mb))
        else:
            chunks = re_ranking_chunks(qf, gf, args.k1, args.k2, 0.3, memory_budget_mb=args.budget_mb, device=dev)
        res = rank_distance_chunks(chunks, qp, qc, gp, gc, max_rank=50, device=dev)
        cmc, mAP = res.cmc, float(np.mean(res.all_AP))
    if cuda:
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"part": part, "dataset": args.dataset, "device": str(dev), "seconds": secs, "distance_seconds": dist_secs,
           "peak_rss_mb": peak, "rss_before_mb": before, "peak_delta_mb": peak - before,
           "rank1": float(cmc[0]), "mAP": float(mAP), "num_query": qf.shape[0], "num_gallery": gf.shape[0]}
    if cuda:
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="market", help="comma list of: market, msmt")
    ap.add_argument("--parts", default="all", help=f"'all' or comma list of: {', '.join(PARTS)}")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply query/gallery/identity counts")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--k1", type=int, default=20)
    ap.add_argument("--k2", type=int, default=6)
    ap.add_argument("--budget-mb", type=float, default=1024, help="TEST.MEMORY_BUDGET_MB for our parts")
    ap.add_argument("--device", default="cpu", help="device of our parts (baselines always run on CPU)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per part")
    ap.add_argument("--json", default="", help="also write all results to this file")
    ap.add_argument("--run-part", default="", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_part:
        print("RESULT " + json.dumps(run_part(args)), flush=True)
        return
    parts = PARTS if args.parts == "all" else tuple(p.strip() for p in args.parts.split(","))
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    results = []
    for ds in args.datasets.split(","):
        if ds not in SIZES:
            ap.error(f"unknown dataset {ds!r}; choose from {', '.join(SIZES)}")
        for part in parts:
            cmd = [sys.executable, os.path.abspath(__file__), "--run-part", part, "--dataset", ds,
                   "--scale", str(args.scale), "--dim", str(args.dim), "--k1", str(args.k1), "--k2", str(args.k2),
                   "--budget-mb", str(args.budget_mb), "--device", args.device if "ours" in part else "cpu",
                   "--threads", str(args.threads)]
            print(f"[{ds}] {part} ...", flush=True)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"  timed out after {args.timeout:.0f} s")
                results.append({"part": part, "dataset": ds, "error": "timeout"})
                continue
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"  failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
                results.append({"part": part, "dataset": ds, "error": f"exit {proc.returncode}"})
                continue
            r = json.loads(line[0][7:])
            results.append(r)
            extra = f", cuda max {r['cuda_max_allocated_mb']:.0f} MiB" if "cuda_max_allocated_mb" in r else ""
            gemm = f" (distances {r['distance_seconds']:.1f} s)" if r["distance_seconds"] else ""
            print(f"  {r['seconds']:.1f} s{gemm}, peak +{r['peak_delta_mb']:.0f} MiB (total {r['peak_rss_mb']:.0f}){extra}, "
                  f"R1 {100 * r['rank1']:.2f} mAP {100 * r['mAP']:.4f}  ({r['num_query']}x{r['num_gallery']})",
                  flush=True)
    ok = {(r["dataset"], r["part"]): r for r in results if "error" not in r}
    for ds in args.datasets.split(","):
        for ours, base in (("metrics-ours", "metrics-baseline"), ("rerank-ours", "rerank-dense")):
            if (ds, ours) in ok and (ds, base) in ok:
                a, b = ok[(ds, ours)], ok[(ds, base)]
                rest = ""
                if a["distance_seconds"] and b["distance_seconds"]:
                    ra, rb = a["seconds"] - a["distance_seconds"], b["seconds"] - b["distance_seconds"]
                    rest = f" (ranking alone, without the shared distance GEMM: {rb / max(ra, 1e-9):.1f}x)"
                print(f"[{ds}] {ours} vs {base}: {b['seconds'] / a['seconds']:.1f}x faster{rest}, peak memory "
                      f"{b['peak_delta_mb'] / max(1.0, a['peak_delta_mb']):.1f}x lower, "
                      f"|dmAP| = {abs(a['mAP'] - b['mAP']):.2e}, |dR1| = {abs(a['rank1'] - b['rank1']):.2e}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
