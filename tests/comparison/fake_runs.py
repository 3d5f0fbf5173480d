"""Finished benchmark run folders built by hand (no training): a record, per-query results with
top-k lists over small real PNG crops, a metrics.json and a log.txt.

Used by the comparison and report tests, which need runs whose per-query numbers are known.
"""

import json
import os

import numpy as np
from PIL import Image

from clipreid_plugin.comparison.records import new_record, write_record
from clipreid_plugin.evaluation.results import per_query_file, save_per_query_npz

DATASET = "SyntheticReID"
QUERY_PIDS = np.array([0, 0, 1, 1, 2, 3])  # 6 queries of 4 identities, cameras 0 / 1
QUERY_CAMS = np.array([0, 1, 0, 1, 0, 1])
GALLERY_PIDS = np.array([0, 1, 2, 3, 0, 1, 2, 3, 9, 9])
GALLERY_CAMS = np.array([1, 0, 1, 0, 2, 2, 2, 2, 1, 2])


def crops(folder):
    """Write the query and gallery crops (64 x 32 PNGs, one colour per identity).

    Returns:
        (query paths, gallery paths).
    """
    os.makedirs(folder, exist_ok=True)
    colours = {0: (200, 40, 40), 1: (40, 160, 40), 2: (40, 40, 200), 3: (200, 160, 40), 9: (120, 120, 120)}

    def write(name, pid):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            Image.new("RGB", (32, 64), colours[int(pid)]).save(path)
        return path

    q = [write(f"{pid:04d}_c{cam}_q{i}.png", pid) for i, (pid, cam) in enumerate(zip(QUERY_PIDS, QUERY_CAMS))]
    g = [write(f"{pid:04d}_c{cam}_g{i}.png", pid) for i, (pid, cam) in enumerate(zip(GALLERY_PIDS, GALLERY_CAMS))]
    return q, g


def make_run(folder, method, ap, first_rank, seed=None, image_dir=None, query_paths=None, mAP=None,
             per_query=True):
    """A finished benchmark run of ``method`` whose per-query AP and first-match ranks are given.

    Args:
        folder: the run's OUTPUT_DIR.
        ap, first_rank: per query (6 values; first_rank 0 = no match).
        seed: the record's seed.
        image_dir: where the crops are (default ``folder/../images``).
        query_paths: override the query paths (another query set).
        mAP: the record's mAP (default: the mean of ``ap``).
        per_query: write the per-query file (False: a run from before they existed).

    Returns:
        The record.
    """
    os.makedirs(folder, exist_ok=True)
    q_paths, g_paths = crops(image_dir or os.path.join(os.path.dirname(os.path.abspath(folder)), "images"))
    ap = np.asarray(ap, np.float64)
    first_rank = np.asarray(first_rank, np.int64)
    valid = first_rank > 0
    rec = new_record(method, f"{method}.yml", "ResNet-18", [DATASET], str(folder))
    rec.update(seed=seed, train_datasets=[DATASET], params_m=11.2, gflops=0.5, train_s=60.0, images_per_s=100.0)
    rec["results"] = {DATASET: {"Rank-1": float(np.mean(first_rank[valid] == 1) * 100),
                                "mAP": float(mAP if mAP is not None else np.mean(ap[valid]) * 100),
                                "mINP": float(np.mean(ap[valid]) * 100), "num_valid_query": int(valid.sum())}}
    write_record(str(folder), rec)
    if per_query:
        # top-5: the query's own identity first when its first match is at rank 1, else a distractor first
        topk = np.zeros((len(QUERY_PIDS), 5), np.int64)
        for i, pid in enumerate(QUERY_PIDS):
            match = [j for j in range(len(GALLERY_PIDS)) if GALLERY_PIDS[j] == pid]
            other = [j for j in range(len(GALLERY_PIDS)) if GALLERY_PIDS[j] != pid]
            order = match[:1] + other if first_rank[i] == 1 else other[:max(0, first_rank[i] - 1)] + match + other
            topk[i] = (order + other)[:5]
        save_per_query_npz(per_query_file(str(folder), DATASET), {
            "query_pids": QUERY_PIDS, "query_camids": QUERY_CAMS, "query_paths": query_paths or q_paths,
            "ap": np.where(valid, ap, np.nan), "inp": np.where(valid, ap, np.nan), "first_rank": first_rank,
            "topk_indices": topk, "topk_distances": np.tile(np.linspace(0.1, 0.5, 5, dtype=np.float32), (6, 1)),
            "gallery_pids": GALLERY_PIDS, "gallery_camids": GALLERY_CAMS, "gallery_paths": g_paths})
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        for it in range(1, 5):
            f.write(json.dumps({"iteration": it, "epoch": (it - 1) // 2, "total_loss": 5.0 / it, "lr": 1e-3}) + "\n")
        f.write(json.dumps({"iteration": 4, "epoch": 1, f"{DATASET}/mAP": rec["results"][DATASET]["mAP"],
                            f"{DATASET}/Rank-1": rec["results"][DATASET]["Rank-1"]}) + "\n")
    return rec
