"""Training curves (matplotlib, the ``[plots]`` extra).

:func:`plot_training_curves` reads ``OUTPUT_DIR/metrics.json`` (one JSON object per line with
``iteration``, ``epoch`` and scalars; records of a training phase such as CLIP-ReID's stage 1
carry ``"phase"`` and count their own iterations and epochs) and draws one panel per group and
phase: losses, learning rate, evaluation metrics (``<dataset>/<metric>``), each phase on its own
epoch axis.
"""

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from clipreid_plugin.utils.errors import InputFileError, InvalidInputError
from clipreid_plugin.utils.plotting import require_pyplot, save_figure

__all__ = ["read_metrics", "CURVE_GROUPS", "ROUND_STEPS", "epoch_positions", "curves_figure", "plot_training_curves"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------
# training curves
# ------------------------------------------------------------------------------------------
def read_metrics(path: str) -> List[Dict]:
    """Read a JSON-lines metrics file (``OUTPUT_DIR/metrics.json``).

    Returns:
        The records (dicts), in file order; blank lines are skipped.

    Raises:
        InputFileError: the file does not exist.
        InvalidInputError: a line is not a JSON object (names the file and line number).
    """
    if not os.path.isfile(path):
        raise InputFileError(f"Metrics file {path} not found (training writes OUTPUT_DIR/metrics.json).")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInputError(f"{path}:{lineno}: not valid JSON ({e.msg}); "
                                        f"expected one JSON object per line.") from None
            if not isinstance(rec, dict):
                raise InvalidInputError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}.")
            records.append(rec)
    return records


def _is_eval_metric(key: str) -> bool:
    metric = key.rsplit("/", 1)[-1]
    return "/" in key and not metric.startswith("num_") and not metric.endswith("_std")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# (panel title, which scalar keys it shows), in drawing order; empty panels are left out
CURVE_GROUPS: List[Tuple[str, Callable[[str], bool]]] = [
    ("losses", lambda k: k.startswith("loss_") or k == "total_loss"),
    ("learning rate", lambda k: k == "lr"),
    ("evaluation (%)", _is_eval_metric),
]


# tick spacings allowed (times a power of ten): ticks read 0, 0.5, 1 or 0, 20, 40, never 0, 8, 16
ROUND_STEPS = [1, 2, 2.5, 5, 10]


def _is_eval_record(rec: Dict) -> bool:
    return any(_is_eval_metric(k) for k in rec)


def _has_epochs(records: Sequence[Dict]) -> bool:
    """Whether every record has a numeric ``epoch`` and ``iteration`` (else x is the record index)."""
    return all(_is_number(r.get("epoch")) and _is_number(r.get("iteration")) for r in records)


def epoch_positions(records: Sequence[Dict]) -> List[float]:
    """The x position, in epochs, of each record of one training phase.

    Records are written at the end of each epoch and every ``SOLVER.LOG_PERIOD_ITERS``
    iterations, with ``iteration`` (the phase's counter, from 0) and ``epoch`` (0-based). The
    last iteration logged in epoch e ends it, so a training record at iteration i of epoch e
    sits at ``e + (i - start_e + 1) / (end_e - start_e + 1)``, with ``start_e`` one past the end
    of epoch e - 1 (0 for epoch 0; when epoch e - 1 is absent, ``end_e + 1`` minus the median
    length of the known epochs, else the first iteration logged in e). An epoch's last record is
    at e + 1 (also the last, possibly unfinished, epoch of an interrupted run); an evaluation
    record (a ``<dataset>/<metric>`` key) of epoch e also sits at e + 1, after that epoch's
    training. Records without ``epoch`` or ``iteration`` sit at their index in ``records``.

    Args:
        records: the records of one phase, in file order.

    Returns:
        One x value per record.
    """
    if not _has_epochs(records):
        return [float(i) for i in range(len(records))]
    ends: Dict[int, int] = {}
    firsts: Dict[int, int] = {}
    for rec in records:
        if not _is_eval_record(rec):
            e, it = int(rec["epoch"]), int(rec["iteration"])
            ends[e] = max(ends.get(e, it), it)
            firsts[e] = min(firsts.get(e, it), it)
    starts = {e: ends[e - 1] + 1 if e - 1 in ends else 0 for e in ends if e - 1 in ends or e == 0}
    lengths = [ends[e] - starts[e] + 1 for e in starts]
    typical = int(np.median(lengths)) if lengths else None
    for e in ends:
        if e not in starts:
            starts[e] = ends[e] + 1 - typical if typical else firsts[e]
    xs = []
    for rec in records:
        e, it = int(rec["epoch"]), int(rec["iteration"])
        if _is_eval_record(rec) or e not in ends:
            xs.append(e + 1.0)
        else:
            xs.append(e + (it - starts[e] + 1) / max(1, ends[e] - starts[e] + 1))
    return xs


def _phases(records: Sequence[Dict]) -> List[Tuple[str, List[Dict]]]:
    """Records split by ``phase`` ("" = main loop), phases in order of first appearance."""
    by_phase: Dict[str, List[Dict]] = {}
    for rec in records:
        by_phase.setdefault(str(rec.get("phase", "")), []).append(rec)
    return list(by_phase.items())


def _series(records: Sequence[Dict], xs: Sequence[float],
            keep: Callable[[str], bool]) -> Dict[str, List[Tuple[float, float]]]:
    out: Dict[str, List[Tuple[float, float]]] = {}
    for x, rec in zip(xs, records):
        for k, v in rec.items():
            if k in ("iteration", "epoch", "phase") or not keep(k):
                continue
            if _is_number(v):
                out.setdefault(k, []).append((float(x), float(v)))
    for pts in out.values():
        pts.sort(key=lambda p: p[0])  # stable: equal positions keep file order
    return {k: out[k] for k in sorted(out, key=_natural_key)}


def _natural_key(name: str):
    """Rank-1 < Rank-5 < Rank-10 (numbers compared as numbers), case-insensitive."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _strip_common_dataset(title: str, series: Dict) -> Tuple[str, Dict]:
    """"D/mAP", "D/Rank-1" -> title "... : D" and names "mAP", "Rank-1" (one dataset only)."""
    prefixes = {k.rsplit("/", 1)[0] if "/" in k else None for k in series}
    if len(prefixes) != 1 or None in prefixes:
        return title, series
    prefix = prefixes.pop()
    return f"{title}: {prefix}", {k[len(prefix) + 1:]: v for k, v in series.items()}


@dataclass
class _Panel:
    phase: str
    title: str
    series: Dict[str, List[Tuple[float, float]]]
    percent: bool
    xlabel: str


def _panels(records: Sequence[Dict], groups) -> List[_Panel]:
    """Training phases (e.g. CLIP-ReID's stage 1) first, as they run before the main loop."""
    phases = sorted(_phases(records), key=lambda p: p[0] == "")
    panels = []
    for phase, recs in phases:
        xs = epoch_positions(recs)
        xlabel = (f"{phase} epoch" if phase else "epoch") if _has_epochs(recs) else "record"
        for title, keep in groups:
            series = _series(recs, xs, keep)
            if series:
                title, series = _strip_common_dataset(title, series)
                panels.append(_Panel(phase, f"[{phase}] {title}" if phase else title, series, "(%)" in title,
                                     xlabel))
    return panels


def curves_figure(metrics: Union[str, Sequence[Dict]], panel_size: Tuple[int, int] = (720, 240),
                  groups: Optional[List[Tuple[str, Callable[[str], bool]]]] = None, dpi: int = 100):
    """Build the training-curves figure (matplotlib) without saving it.

    One panel per non-empty (phase, group) of ``groups`` (default ``CURVE_GROUPS``: losses,
    learning rate, evaluation metrics ``<dataset>/<metric>``), stacked vertically: the panels of
    each training phase (records with ``"phase"``, e.g. CLIP-ReID's ``stage1``, titled
    ``[stage1] ...``) first, on their own x axis of that phase's epochs, then the main loop's
    on a shared x axis of its epochs (positions from :func:`epoch_positions`). Inside a panel the
    series are sorted by name (numbers as numbers: Rank-1, Rank-5, Rank-10) and take
    matplotlib's colour cycle in that order, with the legend to the right of the panel; when
    every series of a panel belongs to one dataset, its name moves to the title. Panels whose values are all >= 0 start their y axis at
    0 (evaluation panels span 0..100), so a flat loss looks flat; ticks are matplotlib's round
    values; series of at most 30 points get a marker on each.

    Args:
        metrics: path of ``metrics.json`` or its records (see :func:`read_metrics`).
        panel_size: (width, height) of one panel in pixels (at ``dpi``).
        groups: (title, key predicate) pairs.
        dpi: pixels per inch of the figure.

    Returns:
        (figure, list of panel titles top to bottom); each panel is ``figure.axes[i]``.

    Raises:
        InvalidInputError: nothing plottable in the records.
        MissingDependencyError: matplotlib is not installed.
    """
    records = read_metrics(metrics) if isinstance(metrics, str) else list(metrics)
    panels = _panels(records, groups or CURVE_GROUPS)
    if not panels:
        raise InvalidInputError(f"No plottable scalar in {metrics if isinstance(metrics, str) else 'the records'}: "
                                f"expected keys like loss_*, total_loss, lr or <dataset>/mAP.")
    plt = require_pyplot("The training-curves picture")
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - the [plots] extra, checked by require_pyplot first

    width, height = panel_size
    fig, axes = plt.subplots(len(panels), 1, figsize=(width / dpi, height * len(panels) / dpi), dpi=dpi,
                             squeeze=False)
    first_of_phase: Dict[str, object] = {}
    for ax, panel in zip(axes[:, 0], panels):
        share = first_of_phase.setdefault(panel.phase, ax)
        if share is not ax:
            ax.sharex(share)
        for j, (name, pts) in enumerate(panel.series.items()):
            x, y = zip(*pts)
            ax.plot(x, y, label=name, color=f"C{j % 10}", linewidth=1.6,
                    marker="o" if len(pts) <= 30 else None, markersize=3.5)
        values = [v for pts in panel.series.values() for _, v in pts]
        if panel.percent:
            ax.set_ylim(0, 100)
        elif min(values) >= 0:
            ax.set_ylim(bottom=0, top=max(values) * 1.08 or 1.0)
        ax.set_title(panel.title, loc="left", fontsize=10)
        ax.set_xlabel(panel.xlabel, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=ROUND_STEPS))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=ROUND_STEPS))
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside: never on a curve
    for ax in axes[:, 0]:
        ax.set_xlim(left=0)
    fig.tight_layout()
    return fig, [p.title for p in panels]


def plot_training_curves(metrics: Union[str, Sequence[Dict]], output_path: str,
                         panel_size: Tuple[int, int] = (720, 240),
                         groups: Optional[List[Tuple[str, Callable[[str], bool]]]] = None) -> List[str]:
    """Draw training curves from a metrics file as one PNG (see :func:`curves_figure`).

    Args:
        metrics: path of ``metrics.json`` or its records (see :func:`read_metrics`).
        output_path: the PNG to write (its folder is created).
        panel_size: (width, height) of one panel in pixels.
        groups: (title, key predicate) pairs (default ``CURVE_GROUPS``).

    Returns:
        Titles of the panels drawn, top to bottom.

    Raises:
        MissingDependencyError: matplotlib is not installed (``pip install 'clipreid_plugin[plots]'``).
    """
    fig, titles = curves_figure(metrics, panel_size, groups)
    save_figure(fig, output_path, format="png", dpi=fig.dpi)
    return titles
