"""Tables of comparisons: paired differences with intervals, the transfer matrix, camera pairs.

* :func:`comparison_table` — one line per (A, B, dataset): the differences B - A of mAP, Rank-1
  and mINP with their bootstrap interval, and the share of queries each method wins;
* :func:`transfer_matrix` — cross-domain results: one row per method, one column per
  (train -> test) pair;
* :func:`camera_pairs_text` — Rank-1 / mAP per (query camera, gallery camera) of one row.

Each comes as terminal / markdown text (tabulate) and CSV; :func:`write_comparison_outputs`
writes them next to the main table.
"""

import csv
import io
import os
from typing import Dict, List, Optional, Sequence, Tuple

from tabulate import tabulate

from clipreid_plugin.utils.file_io import atomic_write_text

from .paired import PAIRED_METRICS
from .records import dataset_rows

__all__ = ["format_interval", "comparison_table", "comparison_csv", "transfer_matrix", "transfer_table",
           "transfer_csv", "camera_pairs_text", "write_comparison_outputs"]

_SHORT = {"mAP": "mAP", "Rank-1": "R-1", "mINP": "mINP"}


def format_interval(m: Dict) -> str:
    """Returns: ``"+1.2 [-0.3, +2.8]"`` (difference and interval, points), with ``*`` when the
    interval excludes 0."""
    star = " *" if m["low"] > 0 or m["high"] < 0 else ""
    return f"{m['diff']:+.1f} [{m['low']:+.1f}, {m['high']:+.1f}]{star}"


def _dataset(c: Dict) -> str:
    train = c.get("train_datasets") or []
    return c["dataset"] if not train or list(train) == [c["dataset"]] else f"{'+'.join(train)}->{c['dataset']}"


def comparison_table(comparisons: Sequence[Dict], tablefmt: str = "simple") -> str:
    """Args: comparisons (:func:`~.comparisons.compare_rows`); tablefmt: a tabulate format.

    Returns:
        The table of paired differences (``*``: the 95% interval excludes 0).
    """
    if not comparisons:
        return "(no paired comparison)"
    conf = int(round(comparisons[0]["confidence"] * 100))
    headers = ["B - A", "dataset", "seeds A/B", "queries (ids)"] + \
        [f"Δ {_SHORT[m]} [{conf}% CI]" for m in PAIRED_METRICS] + ["B wins", "A wins", "ties"]
    rows = []
    for c in comparisons:
        rows.append([f"{c['b']} - {c['a']}", _dataset(c), f"{c['seeds_a']}/{c['seeds_b']}",
                     f"{c['num_queries']} ({c['num_identities']})"]
                    + [format_interval(c["metrics"][m]) for m in PAIRED_METRICS]
                    + [f"{c['b_wins'] * 100:.0f}%", f"{c['a_wins'] * 100:.0f}%", f"{c['ties'] * 100:.0f}%"])
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)


def comparison_csv(comparisons: Sequence[Dict]) -> str:
    """Returns: CSV, one line per comparison, full precision."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = [f"{m}_{k}" for m in PAIRED_METRICS for k in ("a", "b", "diff", "low", "high")]
    w.writerow(["a", "b", "dataset", "seeds_a", "seeds_b", "num_queries", "num_identities", "confidence",
                "num_resamples"] + cols + ["b_wins", "a_wins", "ties"])
    for c in comparisons:
        w.writerow([c["a"], c["b"], _dataset(c), c["seeds_a"], c["seeds_b"], c["num_queries"], c["num_identities"],
                    c["confidence"], c["num_resamples"]]
                   + [c["metrics"][m][k] for m in PAIRED_METRICS for k in ("a", "b", "diff", "low", "high")]
                   + [c["b_wins"], c["a_wins"], c["ties"]])
    return buf.getvalue()


def transfer_matrix(records: Sequence[Dict]) -> Optional[Tuple[List[str], List[str], Dict]]:
    """The cross-domain results of the records, or None when no row trained on other data.

    Returns:
        (methods, columns ``"<train>-><test>"``, ``{(method, column): metrics dict}``), the
        columns in order of first appearance.
    """
    rows = [r for rec in records for r in dataset_rows(rec)]
    if not any(r["dataset"] != r["test_dataset"] for r in rows):
        return None
    methods = list(dict.fromkeys(r["method"] for r in rows))
    columns, cells = [], {}
    for r in rows:
        col = f"{'+'.join(r['train_datasets']) or '?'}->{r['test_dataset']}"
        if col not in columns:
            columns.append(col)
        cells[(r["method"], col)] = r["metrics"]
    return methods, columns, cells


def _transfer_cell(metrics: Optional[Dict]) -> str:
    if not metrics or metrics.get("mAP") is None:
        return "-"
    return f"{metrics['mAP']:.1f} / {metrics.get('Rank-1', float('nan')):.1f}"


def transfer_table(records: Sequence[Dict], tablefmt: str = "simple") -> Optional[str]:
    """Returns: the transfer matrix, one row per method, cells ``mAP / Rank-1`` (seed means), or None."""
    found = transfer_matrix(records)
    if found is None:
        return None
    methods, columns, cells = found
    body = [[m] + [_transfer_cell(cells.get((m, c))) for c in columns] for m in methods]
    return tabulate(body, headers=["method (mAP / R-1)"] + columns, tablefmt=tablefmt, disable_numparse=True)


def transfer_csv(records: Sequence[Dict]) -> Optional[str]:
    """Returns: the transfer matrix as CSV (``<column>_mAP``, ``<column>_Rank-1``), or None."""
    found = transfer_matrix(records)
    if found is None:
        return None
    methods, columns, cells = found
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method"] + [f"{c}_{m}" for c in columns for m in ("mAP", "Rank-1")])
    for meth in methods:
        w.writerow([meth] + ["" if (cells.get((meth, c)) or {}).get(m) is None else cells[(meth, c)][m]
                             for c in columns for m in ("mAP", "Rank-1")])
    return buf.getvalue()


def camera_pairs_text(table: Dict, metric: str = "Rank-1", tablefmt: str = "simple") -> str:
    """Returns: one metric of a camera-pair table (:func:`~.comparisons.camera_pair_table`),
    rows = query cameras, columns = gallery cameras, ``-`` where no query has a match."""
    body = [[f"q cam {qc}"] + ["-" if v is None else f"{v:.1f}" for v in row]
            for qc, row in zip(table["query_cameras"], table[metric])]
    return tabulate(body, headers=[metric] + [f"g cam {g}" for g in table["gallery_cameras"]], tablefmt=tablefmt,
                    disable_numparse=True)


def write_comparison_outputs(records: Sequence[Dict], comparisons: Sequence[Dict], folder: str) -> Dict[str, str]:
    """Write ``comparison.{txt,md,csv}`` (when there are comparisons) and ``transfer.{txt,md,csv}``
    (when rows are cross-domain) into ``folder``.

    Returns:
        ``{"comparison.md": path, ...}`` of the files written.
    """
    os.makedirs(folder, exist_ok=True)
    texts = {}
    if comparisons:
        texts.update({"comparison.txt": comparison_table(comparisons) + "\n",
                      "comparison.md": comparison_table(comparisons, "github") + "\n",
                      "comparison.csv": comparison_csv(comparisons)})
    transfer = transfer_table(records)
    if transfer is not None:
        texts.update({"transfer.txt": transfer + "\n", "transfer.md": transfer_table(records, "github") + "\n",
                      "transfer.csv": transfer_csv(records)})
    paths = {}
    for name, text in texts.items():
        paths[name] = os.path.join(folder, name)
        atomic_write_text(paths[name], text)
    return paths
