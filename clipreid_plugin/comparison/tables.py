"""The comparison table (terminal, markdown, CSV) and its PNG chart (matplotlib, the ``[plots]``
extra), one row per (method, dataset).

Metric columns are percent (as the evaluator reports them). Columns for re-ranked and untrained
results appear only when some run has them. A run that failed or is missing keeps its row, with
its status and empty cells, so nothing is silently dropped.
"""

import csv
import io
import logging
import os
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from tabulate import tabulate

from clipreid_plugin.utils.errors import MissingDependencyError
from clipreid_plugin.utils.file_io import atomic_write_text
from clipreid_plugin.utils.plotting import require_pyplot, save_figure

from .records import dataset_rows

__all__ = ["Column", "table_columns", "table_cells", "table_text", "table_markdown", "table_csv", "CHART_METRICS", "chart_figure",
           "draw_chart", "write_outputs"]

logger = logging.getLogger("clipreid_plugin.comparison")


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
    spread: Optional[Tuple[str, str]] = None  # (group, metric) whose seed spread the cell shows


def _metric(group: str, name: str) -> Callable[[Dict], Optional[float]]:
    return lambda row: row[group].get(name)


def _metric_column(header: str, csv_name: str, group: str, name: str) -> Column:
    return Column(header, csv_name, _metric(group, name), ".1f", (group, name))


def _spread(row: Dict, col: Column) -> Optional[Dict]:
    """The seed spread of a cell ({"std", "min", "max", "n"}), when it has more than one seed."""
    if not col.spread:
        return None
    found = ((row.get("spread") or {}).get(col.spread[0]) or {}).get(col.spread[1])
    return found if found and found.get("n", 0) > 1 else None


def _scaled(key: str, factor: float) -> Callable[[Dict], Optional[float]]:
    return lambda row: None if row.get(key) is None else row[key] * factor


_IDENTITY = [Column("method", "method", lambda r: r["method"]),
             Column("backbone", "backbone", lambda r: r["backbone"]),
             Column("dataset", "dataset", lambda r: r["dataset"]),
             Column("status", "status", lambda r: r["status"])]
_UNTRAINED = [_metric_column("mAP untrained", "mAP_untrained", "untrained", "mAP"),
              _metric_column("R-1 untrained", "Rank-1_untrained", "untrained", "Rank-1")]
_METRICS = [_metric_column("mAP", "mAP", "metrics", "mAP"),
            _metric_column("R-1", "Rank-1", "metrics", "Rank-1"),
            _metric_column("R-5", "Rank-5", "metrics", "Rank-5"),
            _metric_column("R-10", "Rank-10", "metrics", "Rank-10"),
            _metric_column("mINP", "mINP", "metrics", "mINP")]
_RERANK = [_metric_column("mAP (RR)", "mAP_rerank", "rerank", "mAP"),
           _metric_column("R-1 (RR)", "Rank-1_rerank", "rerank", "Rank-1")]
_SEEDS = [Column("seeds", "seeds", lambda r: r.get("seeds"))]
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
    if any(r.get("seeds") for r in rows):
        cols += _SEEDS
    if any(r["untrained"] for r in rows):
        cols += _UNTRAINED
    cols += _METRICS
    if any(r["rerank"] for r in rows):
        cols += _RERANK
    return cols + _COSTS


def table_cells(rows: Sequence[Dict], cols: Sequence[Column]) -> List[List[str]]:
    """Returns: the formatted cells of ``rows`` (``-`` = unknown; with seeds, metric cells read
    ``mean ± std (min-max)``), as the text tables and report.html show them."""
    out = []
    for row in rows:
        cells = []
        for c in cols:
            v = c.get(row)
            spread = _spread(row, c)
            if v is None or v == "":
                cells.append("-")
            elif spread and c.fmt:  # mean ± std (min-max) over the seeds
                f = c.fmt
                cells.append(f"{format(float(v), f)} ± {format(spread['std'], f)} "
                             f"({format(spread['min'], f)}-{format(spread['max'], f)})")
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
    return tabulate(table_cells(rows, cols), headers=[c.header for c in cols], tablefmt=tablefmt, disable_numparse=True)


def table_markdown(records: Sequence[Dict]) -> str:
    """Returns: the comparison table as GitHub markdown (what docs and READMEs paste)."""
    return table_text(records, tablefmt="github")


def table_csv(records: Sequence[Dict]) -> str:
    """Returns: CSV text, one line per (method, dataset), numbers at full precision, empty = unknown."""
    rows = _flatten(records)
    cols = table_columns(rows)
    # with seeds, every metric column is followed by its std, min and max over the seeds
    seeded = any(r.get("seeds") for r in rows)
    header, getters = [], []
    for c in cols:
        header.append(c.csv_name)
        getters.append(c.get)
        if seeded and c.spread:
            for stat in ("std", "min", "max"):
                header.append(f"{c.csv_name}_{stat}")
                getters.append(lambda r, c=c, stat=stat: (_spread(r, c) or {}).get(stat))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if g(row) is None else g(row) for g in getters])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- chart
# (metric, colour): matplotlib's first two default colours
CHART_METRICS = (("mAP", "C0"), ("Rank-1", "C1"))
_UNTRAINED_STYLE = dict(alpha=0.35, hatch="///")


def chart_figure(records: Sequence[Dict], title: str = "mAP and Rank-1 (%) per method and dataset"):
    """Build the grouped bar chart of the table (matplotlib) without saving it.

    One group per (method, dataset) row, labelled with the method, dataset and backbone: a bar
    for mAP and one for Rank-1, each preceded by a light hatched bar of the untrained model when
    the records have untrained results (the demo's point: learning is visible). Every bar is
    labelled with its value. Rows without results keep their place, marked with their status
    ("missing", "failed"). The y axis spans 0..100 %.

    Args:
        records: records (see :mod:`.records`).
        title: chart title.

    Returns:
        The figure; ``figure.axes[0].containers`` are the bar series, labelled ``"mAP"``,
        ``"Rank-1"``, ``"mAP untrained"``, ``"Rank-1 untrained"`` (one bar per row each; rows
        without the value have a bar of height 0).

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    plt = require_pyplot("The benchmark chart")
    from matplotlib.ticker import MultipleLocator  # noqa: PLC0415 - the [plots] extra, checked by require_pyplot first

    rows = _flatten(records)
    untrained = any(r["untrained"] for r in rows)
    series = []  # (label, colour, group, is_untrained)
    for name, colour in CHART_METRICS:
        if untrained:
            series.append((f"{name} untrained", colour, "untrained", True))
        series.append((name, colour, "metrics", False))
    n, bar_w = max(len(rows), 1), 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.0 + 0.55 * len(series) * n + 0.4 * n), 4.2), dpi=100)
    for j, (label, colour, group, is_untrained) in enumerate(series):
        metric = label.split()[0]
        values = [row[group].get(metric) for row in rows]
        xs = [i - 0.4 + (j + 0.5) * bar_w for i in range(len(rows))]
        bars = ax.bar(xs, [v or 0.0 for v in values], bar_w * 0.92, label=label, color=colour,
                      edgecolor=colour, **(_UNTRAINED_STYLE if is_untrained else {}))
        for bar, v in zip(bars, values):
            if v is not None:
                ax.annotate(f"{v:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=8)
    for i, row in enumerate(rows):
        if row["status"] != "ok" or not any(row["metrics"].get(m) is not None for m, _ in CHART_METRICS):
            ax.text(i, 4, row["status"].split(":")[0], ha="center", va="bottom", color="firebrick", fontsize=9)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r['method']}\n{r['dataset']}" + (f"\n{r['backbone']}" if r["backbone"] not in ("", "?") else "")
                        for r in rows], fontsize=8)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.yaxis.set_major_locator(MultipleLocator(20))
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(fontsize=8, ncol=len(series), loc="upper left", bbox_to_anchor=(0, -0.22 if len(rows) else 0),
              frameon=False)
    fig.tight_layout()
    return fig


def draw_chart(records: Sequence[Dict], path: str, title: str = "mAP and Rank-1 (%) per method and dataset") -> None:
    """Draw the grouped bar chart (:func:`chart_figure`) as a PNG.

    Args:
        records: records (see :mod:`.records`).
        path: the ``.png`` file to write (its folder is created).
        title: chart title.

    Raises:
        MissingDependencyError: matplotlib is not installed (``pip install 'clipreid_plugin[plots]'``).
    """
    fig = chart_figure(records, title)
    save_figure(fig, path, format="png", dpi=fig.dpi, bbox_inches="tight")


def write_outputs(records: Sequence[Dict], folder: str, stem: str = "benchmark") -> Dict[str, str]:
    """Write the table as ``<stem>.md``, ``<stem>.csv``, ``<stem>.txt`` and the chart as ``<stem>.png``.

    Args:
        records: the records.
        folder: destination folder (created).
        stem: file name without extension.

    Without matplotlib the chart is skipped with a warning that names the extra to install (the
    tables are what a finished benchmark must not lose).

    Returns:
        ``{"md": path, "csv": path, "txt": path, "png": path}`` (no ``"png"`` when skipped).
    """
    os.makedirs(folder, exist_ok=True)
    paths = {ext: os.path.join(folder, f"{stem}.{ext}") for ext in ("md", "csv", "txt", "png")}
    atomic_write_text(paths["md"], table_markdown(records) + "\n")
    atomic_write_text(paths["csv"], table_csv(records))
    atomic_write_text(paths["txt"], table_text(records) + "\n")
    try:
        draw_chart(records, paths["png"])
    except MissingDependencyError as e:
        logger.warning(f"Skipped {paths.pop('png')}: {e}")
    return paths
