#!/usr/bin/env python
"""Rank a gallery feature file for one or more query images (or a query feature file).

    # gallery features first (tools/extract.py), then query images embedded on the fly
    python tools/search.py --gallery gallery_feats.npz --query person.jpg other.jpg \\
        --config-file output/run/config.yaml --weights output/run/model_final.pth --topk 5
    # or two feature files, with a JSON result file and a picture of the ranked lists
    python tools/search.py --gallery gallery_feats.npz --query-feats query_feats.npz \\
        --output ranks.json --strip ranks.png
    # a large gallery: a faiss IVF index (pip install 'clipreid_plugin[faiss]')
    python tools/search.py --gallery big.npz --query-feats query_feats.npz --index ivf --nprobe 32

Distances are the evaluator's (squared Euclidean on L2-normalised features by default, ties to
the lower gallery index). Search is exact unless --index names a faiss index (flat: exact by
faiss; ivf / ivfpq: approximate, see docs/TOOLS.md). Trailing ``KEY VALUE`` pairs override the
config.
"""

import argparse
import json
import sys

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

from tabulate import tabulate

import clipreid_plugin  # noqa: F401  (registers every built-in component)
from clipreid_plugin.evaluation.distance import METRICS
from clipreid_plugin.utils.cli import run_tool
from clipreid_plugin.usertools.extract import FeatureExtractor, load_features, search
from clipreid_plugin.usertools.index import INDEX_KINDS, NLIST_RULE, GalleryIndex
from clipreid_plugin.usertools.rank_strips import StripLayout, draw_rank_strips, save_png
from clipreid_plugin.utils.errors import InputFileError, InvalidInputError
from clipreid_plugin.utils.file_io import atomic_write_text, check_writable


def build_parser() -> argparse.ArgumentParser:
    """Returns: the argument parser of this tool."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", required=True, metavar="FILE.npz", help="gallery features from tools/extract.py")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--query", nargs="+", metavar="PATH", help="query images and/or folders (needs --config-file)")
    q.add_argument("--query-feats", metavar="FILE.npz", help="query features from tools/extract.py")
    p.add_argument("--config-file", default="", metavar="FILE",
                   help="config of the model (with --query); default: the config stored in --weights")
    p.add_argument("--weights", default="", metavar="FILE", help="checkpoint (with --query); default MODEL.WEIGHTS")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: MODEL.DEVICE)")
    p.add_argument("--topk", type=int, default=10, help="gallery items listed per query")
    p.add_argument("--metric", default="euclidean", choices=METRICS, help="distance (as TEST.METRIC)")
    p.add_argument("--no-normalize", action="store_true", help="skip the L2 normalisation (TEST.FEAT_NORM False)")
    p.add_argument("--index", default="exact", choices=("exact",) + INDEX_KINDS,
                   help="exact (default: every gallery item compared) or a faiss index: flat (exact), "
                        "ivf, ivfpq (approximate, for millions of items; needs the [faiss] extra)")
    p.add_argument("--nlist", type=int, default=None, help=f"IVF cells (default: {NLIST_RULE}; N = gallery size)")
    p.add_argument("--nprobe", type=int, default=None, help="IVF cells visited per query (default nlist/32, >= 8)")
    p.add_argument("--pq-m", type=int, default=None, help="IVF-PQ sub-vectors (must divide the dimension)")
    p.add_argument("--output", default="", metavar="FILE.json", help="write the ranked lists as JSON")
    p.add_argument("--strip", default="", metavar="FILE.png",
                   help="draw the ranked lists as a PNG, every image labelled with its file name")
    p.add_argument("--thumb-height", type=int, default=176, metavar="H",
                   help="thumbnail height in the --strip picture (width from the crops' aspect ratio)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=None, help="config overrides: KEY VALUE ...")
    return p


def main(argv=None) -> None:
    """Parse the arguments, rank the gallery, print / write the ranked lists."""
    args = build_parser().parse_args(argv)
    for output in (args.output, args.strip):  # before the work, not after it
        if output:
            check_writable(output)
    gallery, gallery_paths = load_features(args.gallery)
    if args.query_feats:
        query, query_paths = load_features(args.query_feats)
    else:
        if not (args.config_file or args.weights):
            raise InputFileError("--query images need the model: pass --weights (a checkpoint of this toolkit), or "
                                 "--config-file and --weights.")
        ex = FeatureExtractor(args.config_file or None, args.weights or None, opts=args.opts, device=args.device)
        query, query_paths = ex.embed(args.query)
    index_options = {k: v for k, v in (("nlist", args.nlist), ("nprobe", args.nprobe), ("pq_m", args.pq_m))
                     if v is not None}
    if index_options and args.index in ("exact", "flat"):
        raise InvalidInputError(f"--nlist / --nprobe / --pq-m apply to --index ivf or ivfpq, not {args.index}.")
    index = None
    if args.index != "exact":  # built here to report it (cells, PQ code size) under the lists
        index = GalleryIndex(gallery, args.index, metric=args.metric, normalize=not args.no_normalize,
                             device="cuda" if str(args.device or "auto").startswith("cuda") else (args.device or "auto"),
                             **index_options)
    indices, distances = search(query, gallery, topk=args.topk, metric=args.metric, normalize=not args.no_normalize,
                                index=index, device=args.device)
    ranked = [{"query": qp, "results": [{"rank": r + 1, "path": gallery_paths[int(g)], "distance": float(d)}
                                        for r, (g, d) in enumerate(zip(idx, dist)) if g >= 0]}
              for qp, idx, dist in zip(query_paths, indices.tolist(), distances.tolist())]
    for item in ranked:
        print(f"\nquery: {item['query']}")
        print(tabulate([(r["rank"], f"{r['distance']:.4f}", r["path"]) for r in item["results"]],
                       headers=["rank", "distance", "gallery image"], tablefmt="simple"))
    if index is not None:
        print(f"\nSearched with a {index.summary()}")
    if args.output:
        atomic_write_text(args.output, json.dumps(ranked, indent=2) + "\n")
        print(f"\nRanked lists written to {args.output}")
    if args.strip:
        found = indices.numpy()
        if (found < 0).any():  # an IVF search that found fewer than k items: draw the columns all rows have
            k_all = int((found >= 0).sum(axis=1).min())
            if k_all == 0:
                raise InvalidInputError("The index found no gallery item for some query: raise --nprobe.")
            found = found[:, :k_all]
        picture = draw_rank_strips(query_paths, gallery_paths, found, distances.numpy()[:, :found.shape[1]],
                                   layout=StripLayout(thumb_height=args.thumb_height), show_names=True)
        save_png(picture, args.strip)
        print(f"Picture written to {args.strip}")


if __name__ == "__main__":
    sys.exit(run_tool(main))
