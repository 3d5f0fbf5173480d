"""One table row from several seeds of a run: means, with the spread of every metric.

``tools/benchmark.py --seeds`` runs each method x dataset once per seed (``SOLVER.SEED``) into
``<run folder>/seed<k>``. :func:`aggregate_seeds` turns those records into one record of the
same shape (see :mod:`.records`): every number is the mean over the seeds that finished, and
``"spread"`` holds, per group (``results``, ``rerank``, ``untrained``), dataset and metric,
``{"std", "min", "max", "n"}`` (std: the sample standard deviation, ddof=1; 0 for one seed).
``"runs"`` keeps the seeds' own records (their folders hold the per-query files that paired
comparisons read).
"""

import math
import os
import re
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np

from clipreid_plugin.utils.errors import InvalidInputError

from .records import STAT_KEYS, collect_run, new_record

__all__ = ["SEED_DIR", "seed_dir", "parse_seeds", "aggregate_seeds", "record_runs", "seed_folders",
           "collect_seeded"]

SEED_DIR = "seed{}"
_SEED_RE = re.compile(r"^seed(-?\d+)$")
METRIC_GROUPS = ("results", "rerank", "untrained")


def seed_dir(run_dir: str, seed: int) -> str:
    """Returns: the folder of one seed's run: ``<run_dir>/seed<seed>``."""
    return os.path.join(run_dir, SEED_DIR.format(seed))


def parse_seeds(values: Optional[Sequence[int]]) -> Optional[List[int]]:
    """``--seeds N`` (one number: N seeds, 1..N) or ``--seeds 1 5 9`` (these seeds).

    Returns:
        The seeds, or None without ``--seeds``.
    """
    if not values:
        return None
    values = [int(v) for v in values]
    if len(values) == 1:
        if values[0] < 1:
            raise InvalidInputError(f"--seeds {values[0]}: give a number of seeds >= 1, or two or more seed values.")
        return list(range(1, values[0] + 1))
    return list(dict.fromkeys(values))


def seed_folders(run_dir: str) -> List[str]:
    """Returns: the ``seed<k>`` sub-folders of ``run_dir``, by seed ([] when there are none)."""
    if not os.path.isdir(run_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(run_dir) if (m := _SEED_RE.match(name))
             and os.path.isdir(os.path.join(run_dir, name))]
    return [os.path.join(run_dir, name) for _, name in sorted(found)]


def record_runs(record: Dict) -> List[Dict]:
    """Returns: the single runs behind a table row (the seeds' records, or the record itself)."""
    return list(record.get("runs") or [record])


def _mean_std(values: List[float]) -> Dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "min": float(arr.min()),
            "max": float(arr.max()), "n": len(arr)}


def _numbers(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _aggregate_group(records: Sequence[Dict], group: str):
    means, spread = {}, {}
    datasets = list(dict.fromkeys(ds for r in records for ds in (r.get(group) or {})))
    for ds in datasets:
        metrics = list(dict.fromkeys(k for r in records for k in ((r.get(group) or {}).get(ds) or {})))
        means[ds], spread[ds] = {}, {}
        for k in metrics:
            vals = [r[group][ds][k] for r in records if _numbers(((r.get(group) or {}).get(ds) or {}).get(k))]
            if not vals:
                continue
            if k.startswith("num_"):  # counts (valid / skipped queries) are the same for every seed
                means[ds][k] = vals[0]
                continue
            means[ds][k] = float(np.mean(vals))
            spread[ds][k] = _mean_std(vals)
    return means, spread


def _mean_camera_pairs(records: Sequence[Dict]) -> Dict:
    out = {}
    for ds in dict.fromkeys(ds for r in records for ds in (r.get("camera_pairs") or {})):
        tables = [r["camera_pairs"][ds] for r in records if ds in (r.get("camera_pairs") or {})]
        first = tables[0]
        same = [t for t in tables if t["query_cameras"] == first["query_cameras"]
                and t["gallery_cameras"] == first["gallery_cameras"]]
        merged = dict(first)
        for key in ("mAP", "Rank-1"):
            stack = np.array([[[np.nan if v is None else v for v in row] for row in t[key]] for t in same], float)
            with warnings.catch_warnings():  # a cell empty in every seed stays empty (NaN), silently
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(stack, axis=0)
            merged[key] = [[None if not np.isfinite(v) else float(v) for v in row] for row in mean]
        out[ds] = merged
    return out


def aggregate_seeds(records: Sequence[Dict], output_dir: str = "") -> Dict:
    """Merge the records of one method x dataset run with several seeds into one row.

    Args:
        records: the seeds' records, in seed order.
        output_dir: the folder holding the seed folders.

    Returns:
        A record: identity fields from the first record that has them, ``"seeds"``, ``"runs"``,
        the means of the finished seeds (status ``"ok"``) and their ``"spread"``; status
        ``"ok"`` when every seed finished, else the first problem prefixed by its seed
        (``"failed: seed 2: ..."``, ``"missing: seed 3: ..."``).
    """
    records = list(records)
    base = next((r for r in records if r["status"] == "ok"), records[0])
    row = new_record(base["method"], base["config"], base["backbone"], base["datasets"], output_dir or
                     os.path.dirname(base["output_dir"]))
    row["train_datasets"] = list(base.get("train_datasets") or [])
    ok = [r for r in records if r["status"] == "ok"]
    row["seeds"] = [r.get("seed") for r in records]
    row["runs"] = records
    row["spread"] = {}
    for group in METRIC_GROUPS:
        row[group], row["spread"][group] = _aggregate_group(ok, group)
    for key in STAT_KEYS:
        vals = [r[key] for r in ok if _numbers(r.get(key))]
        row[key] = float(np.mean(vals)) if vals else None
    row["camera_pairs"] = _mean_camera_pairs(ok)
    bad = next((r for r in records if r["status"] != "ok"), None)
    if bad is not None:
        kind, _, reason = bad["status"].partition(":")
        row["status"] = f"{kind}: seed {bad.get('seed')}" + (f":{reason}" if reason else "")
    return row


def collect_seeded(run_dir: str, method: Optional[str] = None, config: str = "", datasets: Sequence[str] = (),
                   seeds: Optional[Sequence[int]] = None) -> Dict:
    """The row of a run folder holding ``seed<k>`` sub-folders.

    Args:
        run_dir: the method x dataset folder.
        method, config, datasets: as :func:`~.records.collect_run`.
        seeds: the seeds expected (a missing one shows in the status); None = those found.

    Returns:
        The aggregated record (:func:`aggregate_seeds`).
    """
    if not seeds:
        folders = seed_folders(run_dir)
        seeds = [int(_SEED_RE.match(os.path.basename(f)).group(1)) for f in folders]
    records = []
    for seed in seeds:
        folder = seed_dir(run_dir, seed)
        rec = collect_run(folder, method, config, datasets)
        if method is None and rec["method"] == os.path.basename(folder):  # named after the folder: the row's
            rec["method"] = os.path.basename(os.path.normpath(run_dir))
        rec["seed"] = seed
        records.append(rec)
    return aggregate_seeds(records, run_dir)
