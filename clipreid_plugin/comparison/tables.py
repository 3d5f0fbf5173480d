"""The comparison table (terminal, markdown, CSV) and its PNG chart, one row per (method, dataset).

Metric columns are percent (as the evaluator reports them). Columns for re-ranked and untrained
results appear only when some run has them. A run that failed or is missing keeps its row, with
its status and empty cells, so nothing is silently dropped.
"""

import csv
import io
import os
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

from PIL import Image, ImageDraw, ImageFont
from tabulate import tabulate

from clipreid_plugin.utils.file_io import atomic_write_text

from .records import dataset_rows

__all__ = ["Column", "table_columns", "table_text", "table_markdown", "table_csv", "draw_chart", "write_outputs"]


class Column(NamedTuple):
    """One table column.

    Attributes:
        header: title in the terminal / markdown table.
        csv_name: title in the CSV file.
        get: row dict -> value (None = empty cell).
        fmt: format of numbers in the terminal / markdown table (CSV keeps full precision).
    """

    header: str
    csv_name: str
    get: Callable[[Dict], object]
    fmt: str = ""


def _metric(group: str, name: str) -> Callable[[Dict], Optional[float]]:
    return lambda row: row[group].get(name)


def _scaled(key: str, factor: float) -> Callable[[Dict], Optional[float]]:
    return lambda row: None if row.get(key) is None else row[key] * factor


_IDENTITY = [Column("method", "method", lambda r: r["method"]),
             Column("backbone", "backbone", lambda r: r["backbone"]),
             Column("dataset", "dataset", lambda r: r["dataset"]),
             Column("status", "status", lambda r: r["status"])]
_UNTRAINED = [Column("mAP untrained", "mAP_untrained", _metric("untrained", "mAP"), ".1f"),
              Column("R-1 untrained", "Rank-1_untrained", _metric("untrained", "Rank-1"), ".1f")]
_METRICS = [Column("mAP", "mAP", _metric("metrics", "mAP"), ".1f"),
            Column("R-1", "Rank-1", _metric("metrics", "Rank-1"), ".1f"),
            Column("R-5", "Rank-5", _metric("metrics", "Rank-5"), ".1f"),
            Column("R-10", "Rank-10", _metric("metrics", "Rank-10"), ".1f"),
            Column("mINP", "mINP", _metric("metrics", "mINP"), ".1f")]
_RERANK = [Column("mAP (RR)", "mAP_rerank", _metric("rerank", "mAP"), ".1f"),
           Column("R-1 (RR)", "Rank-1_rerank", _metric("rerank", "Rank-1"), ".1f")]
_COSTS = [Column("params (M)", "params_M", lambda r: r["params_m"], ".2f"),
          Column("GFLOPs/img", "GFLOPs_per_image", lambda r: r["gflops"], ".2f"),
          Column("train (min)", "train_min", _scaled("train_s", 1 / 60), ".1f"),
          Column("img/s", "inference_images_per_s", lambda r: r["images_per_s"], ".0f")]


def _flatten(records: Sequence[Dict]) -> List[Dict]:
    return [row for rec in records for row in dataset_rows(rec)]


def table_columns(rows: Sequence[Dict]) -> List[Column]:
    """The columns of the table for these rows (optional groups only when some row has values).

    Args:
        rows: flattened rows (:func:`~clipreid_plugin.comparison.records.dataset_rows`).

    Returns:
        The column list, in display order.
    """
    cols = list(_IDENTITY)
    if any(r["untrained"] for r in rows):
        cols += _UNTRAINED
    cols += _METRICS
    if any(r["rerank"] for r in rows):
        cols += _RERANK
    return cols + _COSTS


def _cells(rows: Sequence[Dict], cols: Sequence[Column]) -> List[List[str]]:
    out = []
    for row in rows:
        cells = []
        for c in cols:
            v = c.get(row)
            if v is None or v == "":
                cells.append("-")
            elif c.fmt and isinstance(v, (int, float)):
                cells.append(format(float(v), c.fmt))
            else:
                cells.append(str(v))
        out.append(cells)
    return out


def table_text(records: Sequence[Dict], tablefmt: str = "simple") -> str:
    """Args: records (see :mod:`.records`); tablefmt: a tabulate format.

    Returns:
        The comparison table for the terminal.
    """
    rows = _flatten(records)
    cols = table_columns(rows)
    return tabulate(_cells(rows, cols), headers=[c.header for c in cols], tablefmt=tablefmt, disable_numparse=True)


def table_markdown(records: Sequence[Dict]) -> str:
    """Returns: the comparison table as GitHub markdown (what docs and READMEs paste)."""
    return table_text(records, tablefmt="github")


def table_csv(records: Sequence[Dict]) -> str:
    """Returns: CSV text, one line per (method, dataset), numbers at full precision, empty = unknown."""
    rows = _flatten(records)
    cols = table_columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.csv_name for c in cols])
    for row in rows:
        w.writerow(["" if c.get(row) is None else c.get(row) for c in cols])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- chart
_BAR_COLOURS = (("mAP", (55, 110, 180)), ("Rank-1", (235, 140, 50)))
_BAR_W, _GROUP_GAP, _PLOT_H = 30, 64, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 30, 60, 80


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_chart(records: Sequence[Dict], path: str, title: str = "mAP and Rank-1 (%) per method and dataset") -> None:
    """Draw a grouped bar chart (mAP and Rank-1 of every (method, dataset) row) as a PNG with PIL.

    Rows without results are kept as labelled gaps ("missing" / "failed") rather than dropped.

    Args:
        records: records (see :mod:`.records`).
        path: the ``.png`` file to write.
        title: chart title.
    """
    rows = _flatten(records)
    group_w = len(_BAR_COLOURS) * _BAR_W + _GROUP_GAP
    width = max(_LEFT + _RIGHT + group_w * max(len(rows), 1), 420)
    height = _TOP + _PLOT_H + _BOTTOM
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    small, normal = _font(11), _font(14)
    d.text((_LEFT, 15), title, fill="black", font=normal)
    y0 = _TOP + _PLOT_H  # the 0 % line

    def y(v: float) -> float:
        return y0 - _PLOT_H * max(0.0, min(100.0, v)) / 100.0

    for tick in range(0, 101, 20):  # grid and axis labels
        d.line([(_LEFT, y(tick)), (width - _RIGHT, y(tick))], fill=(225, 225, 225))
        d.text((_LEFT - 8, y(tick)), str(tick), fill="black", font=small, anchor="rm")
    d.line([(_LEFT, _TOP), (_LEFT, y0)], fill="black")
    d.line([(_LEFT, y0), (width - _RIGHT, y0)], fill="black")
    for i, (name, colour) in enumerate(_BAR_COLOURS):  # legend
        lx = _LEFT + i * 75  # under the title
        d.rectangle([lx, 36, lx + 12, 48], fill=colour)
        d.text((lx + 16, 42), name, fill="black", font=small, anchor="lm")
    for g, row in enumerate(rows):
        x = _LEFT + _GROUP_GAP // 2 + g * group_w
        values = [row["metrics"].get(name) for name, _ in _BAR_COLOURS]
        if row["status"] != "ok" or all(v is None for v in values):
            d.text((x + group_w // 2 - _GROUP_GAP // 2, y0 - 12), row["status"].split(":")[0], fill=(200, 0, 0),
                   font=small, anchor="mm")
        for b, ((_, colour), v) in enumerate(zip(_BAR_COLOURS, values)):
            if v is None:
                continue
            bx = x + b * _BAR_W
            d.rectangle([bx, y(v), bx + _BAR_W - 4, y0], fill=colour)
            d.text((bx + (_BAR_W - 4) / 2, y(v) - 2), f"{v:.0f}", fill="black", font=small, anchor="mb")
        cx = x + (group_w - _GROUP_GAP) / 2
        d.text((cx, y0 + 8), row["method"][:18], fill="black", font=small, anchor="mt")
        d.text((cx, y0 + 24), row["dataset"][:18], fill=(90, 90, 90), font=small, anchor="mt")
    img.save(path, format="PNG")


def write_outputs(records: Sequence[Dict], folder: str, stem: str = "benchmark") -> Dict[str, str]:
    """Write the table as ``<stem>.md``, ``<stem>.csv``, ``<stem>.txt`` and the chart as ``<stem>.png``.

    Args:
        records: the records.
        folder: destination folder (created).
        stem: file name without extension.

    Returns:
        ``{"md": path, "csv": path, "txt": path, "png": path}``.
    """
    os.makedirs(folder, exist_ok=True)
    paths = {ext: os.path.join(folder, f"{stem}.{ext}") for ext in ("md", "csv", "txt", "png")}
    atomic_write_text(paths["md"], table_markdown(records) + "\n")
    atomic_write_text(paths["csv"], table_csv(records))
    atomic_write_text(paths["txt"], table_text(records) + "\n")
    draw_chart(records, paths["png"])
    return paths
