"""The benchmark record of one run, stored as ``OUTPUT_DIR/benchmark_record.json``.

A record describes one config run (one method, possibly several test sets)::

    {"method": "bagtricks_R50", "config": "configs/Market1501/bagtricks_R50.yml",
     "backbone": "ResNet-50", "datasets": ["Market1501"], "status": "ok",
     "output_dir": "...",
     "results":   {"Market1501": {"mAP": 85.9, "Rank-1": 94.5, ...}},   # percent, as results.json
     "rerank":    {"Market1501": {...}},   # only when re-ranked evaluation was asked for
     "untrained": {"Market1501": {...}},   # only when the untrained model was evaluated
     "params_m": 23.5, "gflops": 6.1, "train_s": 3600.0, "images_per_s": 850.0,
     "train_datasets": ["Market1501"],  # DATASETS.NAMES of the run (cross-domain: other than "datasets")
     "seed": 1,            # SOLVER.SEED when the benchmark set it (--seeds), else None
     "camera_pairs": {"Market1501": {...}}}   # per camera pair, when the evaluation computed it

A row of several seeds (:mod:`.seeds`) is a record of the same shape whose numbers are the
seeds' means, with ``"runs"`` (the seeds' records) and ``"spread"`` (std, min, max per metric).

``status`` is ``"ok"``, ``"failed: <reason>"`` or ``"missing"`` (``"missing: <what>"`` when
collected: the path looked at); the numbers of a run that did not finish are ``None``.
Records are what ``tools/benchmark.py --collect`` rebuilds its table from: any finished run
folder works (:func:`collect_run`), a benchmark run's or a plain ``tools/train_net.py`` one's.
"""

import json
import logging
import os
import re
from typing import Dict, List, Optional, Sequence

import yaml

# the files every train_net run writes, named where they are written
from clipreid_plugin.engine.trainer import CONFIG_FILE, RUN_INFO_FILE
from clipreid_plugin.evaluation.results import RESULTS_FILE, save_results_json
from clipreid_plugin.utils.errors import InvalidInputError

logger = logging.getLogger("clipreid_plugin.comparison")

__all__ = ["RECORD_FILE", "RESULTS_FILE", "RUN_INFO_FILE", "CONFIG_FILE", "LOG_FILE", "new_record", "failure_status",
           "failed_record", "missing_record", "write_record", "read_record", "collect_run", "dataset_label",
           "dataset_rows", "training_seconds"]

RECORD_FILE = "benchmark_record.json"
STAT_KEYS = ("params_m", "gflops", "train_s", "images_per_s")


def new_record(method: str, config: str, backbone: str, datasets: Sequence[str], output_dir: str,
               status: str = "ok") -> Dict:
    """Returns: a record with the identifying fields set and every result / statistic empty."""
    rec = {"method": method, "config": config, "backbone": backbone, "datasets": list(datasets),
           "status": status, "output_dir": output_dir, "results": {}, "rerank": {}, "untrained": {},
           "train_datasets": [], "seed": None, "camera_pairs": {}}
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


def missing_record(method: str, config: str, backbone: str, datasets: Sequence[str], output_dir: str,
                   what: str = "") -> Dict:
    """Returns: the record of a run whose output folder does not exist (status ``"missing"``, or
    ``"missing: <what>"`` naming the path looked at)."""
    return new_record(method, config, backbone, datasets, output_dir, status=f"missing: {what}" if what else "missing")


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
    data = _read_json(path, "a benchmark record")
    if "status" not in data:
        raise InvalidInputError(f"{path} is not a benchmark record (a JSON object with 'method', 'status', 'results').")
    rec = new_record(data.get("method", ""), data.get("config", ""), data.get("backbone", ""),
                     data.get("datasets", []), data.get("output_dir", os.path.dirname(path)), data["status"])
    rec.update({k: v for k, v in data.items() if k in rec})
    return rec


def _read_json(path: str, what: str) -> Dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"Cannot read {what} {path}: {e}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} is not {what} (expected a JSON object).")
    return data


def _config_tests(path: str, key: str = "TESTS") -> List[str]:
    """DATASETS.<key> (TESTS or NAMES) of a run's merged ``config.yaml`` ([] when unreadable)."""
    try:
        with open(path) as f:
            tests = ((yaml.safe_load(f) or {}).get("DATASETS") or {}).get(key) or []
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    return [tests] if isinstance(tests, str) else [str(t) for t in tests]


LOG_FILE = "log.txt"
# the line the engine's IterationTimer logs at the end of training (engine/hooks.py)
_TRAINING_TOOK = re.compile(r"Training took ([0-9.]+) s")


def training_seconds(log_path: str) -> Optional[float]:
    """The wall clock of training from a run's ``log.txt``: the sum of its "Training took X s"
    lines (one per training session: a resumed run logs the part after the restart too), or
    None without such a line."""
    try:
        with open(log_path, errors="replace") as f:
            took = [float(m.group(1)) for m in _TRAINING_TOOK.finditer(f.read())]
    except OSError:
        return None
    return sum(took) if took else None


def collect_run(output_dir: str, method: Optional[str] = None, config: str = "",
                datasets: Sequence[str] = ()) -> Dict:
    """The record of a finished (or not) run, from its output folder.

    Any run folder works. Read, in this order:

    * ``benchmark_record.json`` (a ``tools/benchmark.py`` run): everything, costs included;
    * otherwise the files of a plain ``tools/train_net.py`` run: ``results.json`` (metrics),
      ``run_info.json`` (the backbone as built and the parameter count; older runs lack it: the
      backbone is then "?", and a warning names the file looked for) and ``config.yaml``
      (the config and test datasets). GFLOPs, training time and images/s stay unknown.

    A folder that does not exist is ``"missing: no folder <path>"``; one without results is
    ``"failed: no benchmark_record.json or results.json in <path> ..."``. Backbone labels always
    come from the model a run built, never from config names.

    Args:
        output_dir: the run's OUTPUT_DIR.
        method: the row's name (default: the record's, else the folder's name).
        config: the config the caller ran (default: the record's, else the folder's ``config.yaml``).
        datasets: test datasets expected (default: from the record, results or config).

    Returns:
        A record (see the module docstring).
    """
    name = method or os.path.basename(os.path.normpath(output_dir))
    if not os.path.isdir(output_dir):
        return missing_record(name, config, "?", datasets, output_dir, f"no folder {output_dir}")
    paths = {f: os.path.join(output_dir, f) for f in (RECORD_FILE, RESULTS_FILE, RUN_INFO_FILE, CONFIG_FILE)}
    try:
        if os.path.isfile(paths[RECORD_FILE]):
            rec = read_record(paths[RECORD_FILE])
            name = method or rec["method"] or name
        elif os.path.isfile(paths[RESULTS_FILE]):
            rec = new_record(name, "", "?", [], output_dir)
            rec["results"] = _read_json(paths[RESULTS_FILE], "a results file")
            if os.path.isfile(paths[RUN_INFO_FILE]):
                info = _read_json(paths[RUN_INFO_FILE], "a run-info file")
                rec["backbone"] = str(info.get("backbone") or "?")
                if isinstance(info.get("parameters"), (int, float)):
                    rec["params_m"] = info["parameters"] / 1e6
            else:
                logger.warning(f"{name}: no {paths[RUN_INFO_FILE]} (written by train_net runs since run_info.json "
                               f"exists): backbone unknown, shown as '?'.")
            if os.path.isfile(paths[CONFIG_FILE]):
                rec["config"] = paths[CONFIG_FILE]
                rec["datasets"] = [d for d in _config_tests(paths[CONFIG_FILE]) if d in rec["results"]]
                rec["train_datasets"] = _config_tests(paths[CONFIG_FILE], "NAMES")
            rec["train_s"] = training_seconds(os.path.join(output_dir, LOG_FILE))
        else:
            return failed_record(name, config, "?", datasets, output_dir,
                                 f"no {RECORD_FILE} or {RESULTS_FILE} in {output_dir} (unfinished or crashed run?)")
    except (ValueError, OSError) as e:
        return failed_record(name, config, "?", datasets, output_dir, str(e))
    rec.update(method=name, config=config or rec["config"], output_dir=output_dir)
    if not rec["datasets"]:
        rec["datasets"] = list(rec["results"]) or list(datasets)
    return rec


def _first(results: Optional[Dict], name: str) -> Dict:
    return (results or {}).get(name) or {}


def dataset_label(train: Sequence[str], test: str) -> str:
    """Returns: ``test``, or ``"<train>-><test>"`` when the run trained on other data (cross-domain)."""
    return test if not train or list(train) == [test] else f"{'+'.join(train)}->{test}"


def dataset_rows(record: Dict) -> List[Dict]:
    """Split a record into one flat dict per test dataset (metrics and statistics side by side).

    Returns:
        ``[{"method", "backbone", "dataset" (label, see :func:`dataset_label`), "test_dataset",
        "train_datasets", "status", "metrics", "rerank", "untrained", "seeds" (None for a single
        run), "spread" ({group: {metric: {"std", "min", "max", "n"}}}), <stats>}]``.
    """
    names = list(record.get("datasets") or []) or list(record.get("results") or {}) or ["?"]
    rows = []
    for ds in names:
        metrics = _first(record.get("results"), ds)
        status = record["status"]
        if status == "ok" and not metrics:
            status = f"failed: no results for {ds}"
        train = list(record.get("train_datasets") or [])
        spread = record.get("spread") or {}
        row = {"method": record["method"], "backbone": record.get("backbone", ""), "dataset": dataset_label(train, ds),
               "test_dataset": ds, "train_datasets": train, "status": status,
               "metrics": metrics, "rerank": _first(record.get("rerank"), ds),
               "untrained": _first(record.get("untrained"), ds),
               "seeds": len(record["runs"]) if record.get("runs") else None,
               "spread": {"metrics": _first(spread.get("results"), ds), "rerank": _first(spread.get("rerank"), ds),
                          "untrained": _first(spread.get("untrained"), ds)}}
        row.update({k: record.get(k) for k in STAT_KEYS})
        rows.append(row)
    return rows
