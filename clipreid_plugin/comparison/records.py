"""The benchmark record of one run, stored as ``OUTPUT_DIR/benchmark_record.json``.

A record describes one config run (one method, possibly several test sets)::

    {"method": "bagtricks_R50", "config": "configs/Market1501/bagtricks_R50.yml",
     "backbone": "ResNet-50", "datasets": ["Market1501"], "status": "ok",
     "output_dir": "...",
     "results":   {"Market1501": {"mAP": 85.9, "Rank-1": 94.5, ...}},   # percent, as results.json
     "rerank":    {"Market1501": {...}},   # only when re-ranked evaluation was asked for
     "untrained": {"Market1501": {...}},   # only when the untrained model was evaluated
     "params_m": 23.5, "gflops": 6.1, "train_s": 3600.0, "images_per_s": 850.0}

``status`` is ``"ok"``, ``"failed: <reason>"`` or ``"missing"``; the numbers of a run that did not
finish are ``None``. Records are what ``tools/benchmark.py --collect`` rebuilds its table from.
"""

import json
import os
from typing import Dict, List, Optional, Sequence

from clipreid_plugin.evaluation.results import save_results_json
from clipreid_plugin.utils.errors import InvalidInputError

__all__ = ["RECORD_FILE", "RESULTS_FILE", "new_record", "failure_status", "failed_record", "missing_record", "write_record",
           "read_record", "collect_run", "dataset_rows"]

RECORD_FILE = "benchmark_record.json"
RESULTS_FILE = "results.json"  # what tools/train_net.py writes at the end of every run
STAT_KEYS = ("params_m", "gflops", "train_s", "images_per_s")


def new_record(method: str, config: str, backbone: str, datasets: Sequence[str], output_dir: str,
               status: str = "ok") -> Dict:
    """Returns: a record with the identifying fields set and every result / statistic empty."""
    rec = {"method": method, "config": config, "backbone": backbone, "datasets": list(datasets),
           "status": status, "output_dir": output_dir, "results": {}, "rerank": {}, "untrained": {}}
    rec.update({k: None for k in STAT_KEYS})
    return rec


def failed_record(method: str, config: str, backbone: str, datasets: Sequence[str], output_dir: str,
                  reason: str) -> Dict:
    """Returns: the record of a run that failed (status from :func:`failure_status`)."""
    return new_record(method, config, backbone, datasets, output_dir, status=failure_status(reason))


def failure_status(reason: str) -> str:
    """Returns: ``"failed: <first line of reason>"`` (at most 200 characters of it)."""
    lines = str(reason).strip().splitlines() or ["unknown error"]
    return f"failed: {lines[0][:200]}"


def missing_record(method: str, config: str, backbone: str, datasets: Sequence[str], output_dir: str) -> Dict:
    """Returns: the record of a run whose output folder does not exist."""
    return new_record(method, config, backbone, datasets, output_dir, status="missing")


def write_record(output_dir: str, record: Dict) -> str:
    """Atomically write ``record`` to ``output_dir/benchmark_record.json``.

    Returns:
        The file path.
    """
    path = os.path.join(output_dir, RECORD_FILE)
    save_results_json(path, record)  # numpy scalars converted, NaN kept readable
    return path


def read_record(path: str) -> Dict:
    """Read a record file, filling fields absent from older files.

    Raises:
        ValueError: the file is not a JSON record (message names the file).
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"Cannot read the benchmark record {path}: {e}") from None
    if not isinstance(data, dict) or "status" not in data:
        raise InvalidInputError(f"{path} is not a benchmark record (a JSON object with 'method', 'status', 'results').")
    rec = new_record(data.get("method", ""), data.get("config", ""), data.get("backbone", ""),
                     data.get("datasets", []), data.get("output_dir", os.path.dirname(path)), data["status"])
    rec.update({k: v for k, v in data.items() if k in rec})
    return rec


def collect_run(output_dir: str, method: str, config: str, backbone: str, datasets: Sequence[str]) -> Dict:
    """The record of a finished (or not) run, from its output folder.

    Reads ``benchmark_record.json`` when present; otherwise a plain ``tools/train_net.py`` run's
    ``results.json`` (metrics only: costs unknown); otherwise the run is ``"missing"`` (no folder)
    or failed (folder without results).

    Args:
        output_dir: the run's OUTPUT_DIR.
        method, config, backbone, datasets: what the run is (kept from the caller's list, so a
            renamed method shows under the caller's name).

    Returns:
        A record (see the module docstring).
    """
    if not os.path.isdir(output_dir):
        return missing_record(method, config, backbone, datasets, output_dir)
    record_path, results_path = os.path.join(output_dir, RECORD_FILE), os.path.join(output_dir, RESULTS_FILE)
    try:
        if os.path.isfile(record_path):
            rec = read_record(record_path)
        elif os.path.isfile(results_path):
            rec = new_record(method, config, backbone, datasets, output_dir)
            with open(results_path) as f:
                rec["results"] = json.load(f)
        else:
            return failed_record(method, config, backbone, datasets, output_dir,
                                 f"no {RECORD_FILE} or {RESULTS_FILE} in {output_dir} (unfinished run?)")
    except (ValueError, OSError) as e:
        return failed_record(method, config, backbone, datasets, output_dir, str(e))
    rec.update(method=method, config=config or rec["config"], backbone=rec["backbone"] or backbone,
               output_dir=output_dir)
    if not rec["datasets"]:
        rec["datasets"] = list(rec["results"]) or list(datasets)
    return rec


def _first(results: Optional[Dict], name: str) -> Dict:
    return (results or {}).get(name) or {}


def dataset_rows(record: Dict) -> List[Dict]:
    """Split a record into one flat dict per test dataset (metrics and statistics side by side).

    Returns:
        ``[{"method", "backbone", "dataset", "status", "metrics", "rerank", "untrained", <stats>}]``.
    """
    names = list(record.get("datasets") or []) or list(record.get("results") or {}) or ["?"]
    rows = []
    for ds in names:
        metrics = _first(record.get("results"), ds)
        status = record["status"]
        if status == "ok" and not metrics:
            status = f"failed: no results for {ds}"
        row = {"method": record["method"], "backbone": record.get("backbone", ""), "dataset": ds, "status": status,
               "metrics": metrics, "rerank": _first(record.get("rerank"), ds),
               "untrained": _first(record.get("untrained"), ds)}
        row.update({k: record.get(k) for k in STAT_KEYS})
        rows.append(row)
    return rows
