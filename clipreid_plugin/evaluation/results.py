"""Result tables (terminal, CSV, markdown), JSON results and the ranked-list ``.npz`` file."""

import csv
import io
import json
import math
import os
from typing import List, Mapping, Optional, Sequence

import numpy as np
from tabulate import tabulate

from clipreid_plugin.utils.errors import InvalidInputError
from clipreid_plugin.utils.file_io import atomic_write, atomic_write_text

__all__ = ["RESULTS_FILE", "results_table", "results_csv", "results_markdown", "save_results_json", "save_results_csv",
           "save_ranking_npz", "NPZ_KEYS", "PER_QUERY_KEYS", "per_query_file", "save_per_query_npz",
           "load_per_query"]

RESULTS_FILE = "results.json"  # a run's final results, written by save_run_results

# Keys of <OUTPUT_DIR>/<dataset>_results.npz (see docs/EVALUATION.md).
NPZ_KEYS = ("query_feats", "gallery_feats", "query_pids", "gallery_pids", "query_camids", "gallery_camids",
            "query_paths", "gallery_paths", "topk_indices", "topk_distances")

# Keys always present in <OUTPUT_DIR>/<dataset>_per_query.npz (see docs/EVALUATION.md); the
# optional top-k and per-gallery-camera arrays are listed in save_per_query_npz.
PER_QUERY_KEYS = ("query_pids", "query_camids", "query_paths", "ap", "inp", "first_rank")


def _columns(results: Mapping[str, Mapping[str, float]]) -> List[str]:
    cols: List[str] = []
    for metrics in results.values():
        for k in metrics:
            if k not in cols:
                cols.append(k)
    return cols


def _rows(results, cols, fmt: str) -> List[List[str]]:
    rows = []
    for name, metrics in results.items():
        row = [name]
        for c in cols:
            v = metrics.get(c, "")
            # metrics are floats (percent), counts are ints and print as such
            row.append(format(float(v), fmt) if isinstance(v, (float, np.floating)) else str(v))
        rows.append(row)
    return rows


def results_table(results: Mapping[str, Mapping[str, float]], fmt: str = ".2f") -> str:
    """One row per dataset, one column per metric (the union, in first-seen order).

    Args:
        results: {dataset_name: {metric: value}} (metrics in percent, counts as ints).
        fmt: format of float values.

    Returns:
        A ``tabulate`` "pipe" table string.
    """
    cols = _columns(results)
    return tabulate(_rows(results, cols, fmt), headers=["Dataset"] + cols, tablefmt="pipe",
                    stralign="left", numalign="left")


def results_markdown(results: Mapping[str, Mapping[str, float]], fmt: str = ".1f") -> str:
    """Returns: a GitHub-markdown table of ``results`` (as :func:`results_table`, README precision)."""
    cols = _columns(results)
    return tabulate(_rows(results, cols, fmt), headers=["Dataset"] + cols, tablefmt="github")


def results_csv(results: Mapping[str, Mapping[str, float]]) -> str:
    """Returns: CSV text with header ``dataset,<metrics...>`` and full-precision values."""
    cols = _columns(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset"] + cols)
    for name, metrics in results.items():
        w.writerow([name] + [metrics.get(c, "") for c in cols])
    return buf.getvalue()


def save_results_csv(path: str, results: Mapping[str, Mapping[str, float]]) -> None:
    """Atomically write :func:`results_csv` to ``path``."""
    atomic_write_text(path, results_csv(results))


def _jsonable(v):
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else str(v)
    return v


def save_results_json(path: str, results: Mapping[str, Mapping[str, float]]) -> None:
    """Atomically write ``results`` as indented JSON (numpy scalars converted, NaN/inf as strings).

    Args:
        path: destination file; its folder is created.
        results: {dataset_name: {metric: value}}.
    """
    atomic_write_text(path, json.dumps(_jsonable(results), indent=2, sort_keys=False) + "\n")


def save_run_results(output_dir: str, results: Mapping[str, Mapping[str, float]]) -> None:
    """Write a run's final results as ``results.json``, ``results.csv`` and ``results.md``.

    Args:
        output_dir: the run's OUTPUT_DIR.
        results: {dataset_name: {metric: value}}, one row per test set.
    """
    save_results_json(os.path.join(output_dir, RESULTS_FILE), results)
    save_results_csv(os.path.join(output_dir, "results.csv"), results)
    atomic_write_text(os.path.join(output_dir, "results.md"), results_markdown(results) + "\n")


def save_ranking_npz(path: str, query_feats: np.ndarray, gallery_feats: np.ndarray, query_pids, gallery_pids,
                     query_camids, gallery_camids, query_paths: Sequence[str], gallery_paths: Sequence[str],
                     topk_indices: Optional[np.ndarray], topk_distances: Optional[np.ndarray]) -> None:
    """Atomically write the ranked-list file read by the visualisation tool.

    Arrays (``np.load(path)``; see ``NPZ_KEYS``): ``query_feats`` (Q, D) / ``gallery_feats`` (G, D)
    float32 as used for the distances; ``*_pids`` / ``*_camids`` int64; ``*_paths`` unicode
    arrays; ``topk_indices`` (Q, k) int64 gallery indices of the best kept gallery items
    (same-identity-same-camera items removed, ties by gallery index) and ``topk_distances`` (Q, k)
    float32 their distances.
    """
    def write(f):
        np.savez(f, query_feats=np.asarray(query_feats, np.float32), gallery_feats=np.asarray(gallery_feats, np.float32),
                 query_pids=np.asarray(query_pids, np.int64), gallery_pids=np.asarray(gallery_pids, np.int64),
                 query_camids=np.asarray(query_camids, np.int64), gallery_camids=np.asarray(gallery_camids, np.int64),
                 query_paths=np.asarray(list(query_paths), dtype=str), gallery_paths=np.asarray(list(gallery_paths), dtype=str),
                 topk_indices=np.zeros((len(query_pids), 0), np.int64) if topk_indices is None else topk_indices,
                 topk_distances=np.zeros((len(query_pids), 0), np.float32) if topk_distances is None else topk_distances)
    atomic_write(path, write, mode="wb")


def per_query_file(output_dir: str, dataset: str, rerank: bool = False) -> str:
    """Returns: ``output_dir/<dataset>_per_query.npz`` (``_per_query_rerank.npz`` for re-ranked
    results, so that a re-ranked evaluation of the same model does not replace the plain one)."""
    return os.path.join(output_dir, f"{dataset or 'test'}_per_query{'_rerank' if rerank else ''}.npz")


def save_per_query_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically write the per-query results of one evaluation (compressed ``.npz``).

    Args:
        path: destination (:func:`per_query_file`).
        arrays: ``PER_QUERY_KEYS``, one entry per query in evaluation order: ``query_pids`` /
            ``query_camids`` int64, ``query_paths`` str, ``ap`` / ``inp`` float64 in [0, 1] (NaN
            for a query without a kept match), ``first_rank`` int64 (1-based rank of the first
            kept match, 0 = none). Optional: ``topk_indices`` (Q, k) int64 / ``topk_distances``
            (Q, k) float32 with ``gallery_pids``, ``gallery_camids`` and ``gallery_paths``; and
            ``gallery_cameras`` (C,) with ``ap_by_gallery_camera`` / ``first_rank_by_gallery_camera``
            (Q, C): each query ranked against the gallery items of one camera only.
    """
    missing = [k for k in PER_QUERY_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"Per-query results lack {missing}.")
    data = {k: np.asarray(v) for k, v in arrays.items()}
    for key in ("query_paths", "gallery_paths"):
        if key in data:
            data[key] = np.asarray([str(p) for p in data[key]], dtype=str)
    atomic_write(path, lambda f: np.savez_compressed(f, **data), mode="wb")


def load_per_query(path: str) -> dict:
    """Read a per-query file (:func:`save_per_query_npz`).

    Returns:
        ``{key: array}`` for every key in the file.

    Raises:
        InvalidInputError: the file is unreadable or lacks ``PER_QUERY_KEYS``.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"Cannot read per-query results {path}: {e}") from None
    missing = [k for k in PER_QUERY_KEYS if k not in out]
    if missing:
        raise InvalidInputError(f"{path} is not a per-query results file: missing {missing}.")
    return out
