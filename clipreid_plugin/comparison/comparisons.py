"""Method-vs-method comparisons of table rows, from the per-query files their runs wrote.

* :func:`run_per_query` finds and reads a run's ``<dataset>_per_query.npz`` (or says how to
  re-evaluate an older run that has none);
* :func:`compare_rows` compares pairs of rows (``--compare A B``, or each method against the
  first) on every test set they share, with :func:`~.paired.compare_per_query`;
* :func:`camera_pair_table` is the per camera-pair breakdown (query camera x gallery camera) of
  Rank-1 and mAP, from a per-query file that has the per-gallery-camera arrays.
"""

import glob
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from clipreid_plugin.evaluation.results import load_per_query, per_query_file
from clipreid_plugin.utils.errors import InvalidInputError

from .paired import compare_per_query, disagreement_order
from .seeds import record_runs

__all__ = ["find_per_query", "run_per_query", "camera_pair_table", "row_key", "default_pairs", "compare_rows"]

logger = logging.getLogger("clipreid_plugin.comparison")


def find_per_query(output_dir: str, dataset: str) -> Optional[str]:
    """Returns: ``output_dir/<dataset>_per_query.npz``, else the newest one written by a later
    ``--eval-only --resume`` of that run (``output_dir/eval_*/``), else None."""
    path = per_query_file(output_dir, dataset)
    if os.path.isfile(path):
        return path
    later = glob.glob(os.path.join(glob.escape(output_dir), "eval_*", os.path.basename(path)))
    return max(later, key=os.path.getmtime) if later else None


def run_per_query(record: Dict, dataset: str) -> Dict[str, np.ndarray]:
    """Read the per-query results of one run (a single seed's record) on ``dataset``.

    Raises:
        InvalidInputError: the run has none (one line saying how to re-evaluate it).
    """
    out = record["output_dir"]
    path = find_per_query(out, dataset)
    if path is None:
        config = os.path.join(out, "config.yaml")
        raise InvalidInputError(
            f"{out} has no per-query results for {dataset} ({os.path.basename(per_query_file(out, dataset))}; runs "
            f"evaluated before they existed): re-evaluate it with `python tools/train_net.py --config-file {config} "
            f"--eval-only --resume OUTPUT_DIR {out}`, then compare again.")
    return load_per_query(path)


def camera_pair_table(per_query: Dict[str, np.ndarray]) -> Optional[Dict]:
    """Rank-1 and mAP per (query camera, gallery camera) pair, in percent.

    Each query is ranked against the gallery images of one camera alone (computed by the
    evaluator with ``TEST.PER_QUERY.CAMERA_PAIRS``); a cell averages the queries of the row's
    camera that have a match in the column's camera. Under the Market-1501 protocol a query's
    own camera holds none of its matches, so the diagonal is empty.

    Returns:
        ``{"query_cameras": [...], "gallery_cameras": [...], "mAP": [[...]], "Rank-1": [[...]],
        "queries": [[...]]}`` (rows = query cameras; None where no query has a match), or None
        when the file lacks the per-gallery-camera arrays.
    """
    if "ap_by_gallery_camera" not in per_query:
        return None
    qc = per_query["query_camids"]
    ap, first = per_query["ap_by_gallery_camera"], per_query["first_rank_by_gallery_camera"]
    q_cams = sorted(int(c) for c in np.unique(qc))
    table = {"query_cameras": q_cams, "gallery_cameras": [int(c) for c in per_query["gallery_cameras"]],
             "mAP": [], "Rank-1": [], "queries": []}
    for cam in q_cams:
        rows = qc == cam
        has = rows[:, None] & (first > 0)
        n = has.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            m_ap = np.where(has, ap, 0.0).sum(0) / n * 100
            r1 = (has & (first == 1)).sum(0) / n * 100
        table["mAP"].append([float(v) if k else None for v, k in zip(m_ap, n)])
        table["Rank-1"].append([float(v) if k else None for v, k in zip(r1, n)])
        table["queries"].append([int(k) for k in n])
    return table


def row_key(row: Dict) -> Tuple[str, ...]:
    """Returns: the training datasets of a row (rows compare only when trained on the same data)."""
    return tuple(row.get("train_datasets") or row.get("datasets") or ())


def default_pairs(rows: Sequence[Dict]) -> List[Tuple[str, str]]:
    """Returns: (first method, each other method), by row order of methods."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    return [(methods[0], m) for m in methods[1:]]


def _find(rows: Sequence[Dict], method: str) -> List[Dict]:
    found = [r for r in rows if r["method"] == method]
    if not found:
        names = ", ".join(dict.fromkeys(r["method"] for r in rows))
        raise InvalidInputError(f"--compare: no method named {method!r} in this benchmark (methods: {names}).")
    return found


def compare_rows(rows: Sequence[Dict], pairs: Sequence[Tuple[str, str]], strict: bool = True,
                 num_resamples: int = 1000, disagreements: int = 0) -> List[Dict]:
    """Paired comparisons of method B against method A on every test set both rows have.

    Args:
        rows: table rows (records, seed-aggregated or not).
        pairs: (A, B) method names; the difference is B - A.
        strict: raise on a run without per-query results or on different query sets (an explicit
            ``--compare``); False logs the one-line problem and leaves that comparison out (the
            default comparisons, so that ``--collect`` of older runs still gives its table).
        num_resamples: bootstrap resamples.
        disagreements: also keep the indices of this many queries where A and B differ most.

    Returns:
        One dict per (pair, dataset): ``{"a", "b", "dataset", "train_datasets", ...}`` plus
        :func:`~.paired.compare_per_query`'s result; with ``disagreements``, ``"queries"``
        (indices), ``"runs_a"`` / ``"runs_b"`` (the first seed's per-query arrays, for pictures).
    """
    out = []
    for a_name, b_name in pairs:
        for row_a in _find(rows, a_name):
            for row_b in _find(rows, b_name):
                if row_key(row_a) != row_key(row_b) or row_a["status"] != "ok" or row_b["status"] != "ok":
                    continue
                for ds in [d for d in row_a["datasets"] if d in row_b["datasets"]]:
                    try:
                        runs_a = [run_per_query(r, ds) for r in record_runs(row_a)]
                        runs_b = [run_per_query(r, ds) for r in record_runs(row_b)]
                        res = compare_per_query(runs_a, runs_b, [r["output_dir"] for r in record_runs(row_a)],
                                                [r["output_dir"] for r in record_runs(row_b)], num_resamples)
                    except InvalidInputError as e:
                        if strict:
                            raise
                        logger.warning(f"No comparison of {b_name} with {a_name} on {ds}: {e}")
                        continue
                    res.update(a=a_name, b=b_name, dataset=ds, train_datasets=list(row_key(row_a)))
                    if disagreements:
                        res.update(queries=disagreement_order(runs_a, runs_b, disagreements), runs_a=runs_a[0],
                                   runs_b=runs_b[0], dir_a=record_runs(row_a)[0]["output_dir"],
                                   dir_b=record_runs(row_b)[0]["output_dir"])
                    out.append(res)
    return out
