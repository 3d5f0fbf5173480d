"""Gallery search at deployment scale: exact search vs faiss indexes, measured in one run.

A synthetic gallery (default 1,000,000 x 512 float32, CPU) is searched by every method for the
same queries:
  * exact: ``clipreid_plugin.usertools.search`` without an index (the default path: blocked
    torch distances + top-k, what evaluation does);
  * faiss flat: exact search by faiss (BLAS);
  * faiss IVF (inverted file, exact distances inside the visited cells) at two ``nprobe``;
  * faiss IVF-PQ (product-quantised codes, 64 bytes per item at D = 512).
For each: build time (k-means training + adding the gallery), queries per second (all queries
in one call, after one warm-up query), the speed-up over exact search (ratio of queries/s in
this run), and recall@10 against exact search (the fraction of the exact top-10 found in the
method's top-10).

The features imitate ReID embeddings: each gallery identity has ~10 crops around a centre; the
centres lie near a 64-dimensional subspace of R^512 (embeddings are far from isotropic), crops
add isotropic noise, everything is L2-normalised; each query is one more crop of a gallery
identity (its nearest gallery crop has cosine similarity ~0.64 on average, its 10th ~0.58, as
trained ReID features). Recall depends on the data: measure on your own gallery before
choosing nprobe.

    python benchmarks/search_index.py                  # 1M x 512, 1000 queries (minutes, ~8 GB RAM)
    python benchmarks/search_index.py --tiny           # 10k x 64, seconds (what the test runs)
    python benchmarks/search_index.py --gallery 200000 --queries 500 --threads 4

Needs faiss: pip install 'clipreid_plugin[faiss]'.
"""

import argparse
import gc
import os
import sys
import time

# tools/ holds the process defaults every command line sets before torch loads
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from cli_defaults import set_cli_defaults  # noqa: E402

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import torch

from clipreid_plugin.usertools.extract import search
from clipreid_plugin.usertools.index import GalleryIndex, require_faiss


def make_features(num_gallery: int, num_queries: int, dim: int, latent: int = 64, crops_per_id: int = 10,
                  noise: float = 0.8, seed: int = 0):
    """Synthetic ReID-like features (see the module docstring).

    Returns:
        (queries (Q, D), gallery (G, D)) float32 tensors, L2-normalised.
    """
    g = torch.Generator().manual_seed(seed)
    num_ids = max(1, num_gallery // crops_per_id)
    basis = torch.randn(min(latent, dim), dim, generator=g) / (min(latent, dim) ** 0.5)
    centres = torch.randn(num_ids, basis.shape[0], generator=g) @ basis
    centres += 0.3 * torch.randn(num_ids, dim, generator=g) / dim ** 0.5 * centres.norm(dim=1, keepdim=True)

    def crops(ids):
        out = torch.empty(len(ids), dim)
        for s in range(0, len(ids), 65536):  # chunks: bounded temporary memory
            c = centres[ids[s:s + 65536]]
            c = c + noise * c.norm(dim=1, keepdim=True) / dim ** 0.5 * torch.randn(c.shape, generator=g)
            out[s:s + 65536] = torch.nn.functional.normalize(c, dim=1)
        return out

    gallery_ids = torch.arange(num_gallery) % num_ids
    query_ids = torch.randint(0, num_ids, (num_queries,), generator=g)
    return crops(query_ids), crops(gallery_ids)


def recall_at_k(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Returns: mean over queries of |found_i ∩ exact_i| / k (k = exact.shape[1])."""
    hits = sum(len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact))
    return hits / exact.numel()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", type=int, default=1_000_000, help="gallery size")
    p.add_argument("--dim", type=int, default=512, help="feature dimension")
    p.add_argument("--queries", type=int, default=1000, help="number of queries")
    p.add_argument("--topk", type=int, default=10, help="k of recall@k")
    p.add_argument("--nlist", type=int, default=None, help="IVF cells (default: the index's, ~sqrt(gallery))")
    p.add_argument("--nprobe", type=int, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="the two IVF nprobe values measured (default: nlist/64 and nlist/16, at least 4 and 8)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and faiss (default: all)")
    p.add_argument("--tiny", action="store_true",
                   help="10,000 x 64 gallery, 50 queries, 1 thread (unless --threads): runs in seconds")
    args = p.parse_args(argv)
    if args.tiny:
        args.gallery, args.dim, args.queries = 10_000, 64, 50
        args.threads = args.threads or 1
    faiss = require_faiss()
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)

    (query, gallery), gen_s = timed(lambda: make_features(args.gallery, args.queries, args.dim))
    print(f"gallery {args.gallery:,} x {args.dim}, {args.queries} queries, top-{args.topk}; "
          f"torch threads {torch.get_num_threads()}, faiss threads {faiss.omp_get_max_threads()}; "
          f"features generated in {gen_s:.1f} s", flush=True)

    rows = []  # (method, build s, queries/s, recall@k)
    search(query[:1], gallery, topk=args.topk)  # warm-up
    (exact, _), exact_s = timed(lambda: search(query, gallery, topk=args.topk))
    exact_qps = args.queries / exact_s
    rows.append(("exact (torch, default)", 0.0, exact_qps, 1.0))

    def measure(name, index, build_s):
        index.search(query[:1], args.topk)  # warm-up
        (found, _), s = timed(lambda: index.search(query, args.topk))
        rows.append((name, build_s, args.queries / s, recall_at_k(found, exact)))
        print(f"  {rows[-1][0]}: done", flush=True)

    flat = GalleryIndex(gallery, "flat", device="cpu")
    measure("faiss flat", flat, flat.build_seconds)
    del flat
    gc.collect()

    ivf = GalleryIndex(gallery, "ivf", nlist=args.nlist, device="cpu")
    low, high = args.nprobe or (max(4, ivf.nlist // 64), max(8, ivf.nlist // 16))
    for nprobe in (low, high):
        ivf.set_nprobe(min(nprobe, ivf.nlist))
        measure(f"faiss IVF{ivf.nlist},Flat nprobe={ivf.nprobe}", ivf, ivf.build_seconds)
    del ivf
    gc.collect()

    pq = GalleryIndex(gallery, "ivfpq", nlist=args.nlist, nprobe=high, device="cpu")
    measure(f"faiss IVF{pq.nlist},PQ{pq.pq_m}x{pq.pq_bits} nprobe={pq.nprobe}", pq, pq.build_seconds)

    print(f"\n| method | build (s) | queries/s | speed-up vs exact | recall@{args.topk} |")
    print("|---|---|---|---|---|")
    for name, build_s, qps, rec in rows:
        print(f"| {name} | {build_s:.1f} | {qps:,.0f} | {qps / exact_qps:.1f}x | {rec:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
