"""Pictures of results, drawn with PIL only: ranked-list strips and training curves.

* :func:`visualize_ranking` reads a finished evaluation's ``<dataset>_results.npz``
  (``TEST.SAVE_RESULTS True``; format in docs/EVALUATION.md) and draws one row per query: the
  query, then its top-k gallery images with a green border (same identity) or red border
  (different identity) and the distance under each. Queries can be shown worst or best first.
* :func:`plot_training_curves` reads ``OUTPUT_DIR/metrics.json`` (one JSON object per line with
  ``iteration``, ``epoch`` and scalars) and draws one panel per group: training losses, CLIP-ReID
  stage-1 losses, learning rates, evaluation metrics (``<dataset>/<metric>``).
"""

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clipreid_plugin.evaluation.results import NPZ_KEYS
from clipreid_plugin.utils.errors import InputFileError
from clipreid_plugin.utils.errors import InvalidInputError

__all__ = ["MATCH_COLOUR", "MISMATCH_COLOUR", "QUERY_COLOUR", "UNKNOWN_COLOUR", "SERIES_COLOURS", "StripLayout",
           "draw_rank_strips", "save_png", "load_ranking", "query_scores", "visualize_ranking", "read_metrics",
           "CURVE_GROUPS", "ORDERS", "plot_training_curves"]

logger = logging.getLogger(__name__)

MATCH_COLOUR = (0, 180, 0)        # border of a gallery image with the query's identity
MISMATCH_COLOUR = (220, 0, 0)     # border of a gallery image with another identity
QUERY_COLOUR = (40, 90, 230)      # border of the query image
UNKNOWN_COLOUR = (150, 150, 150)  # border when identities are unknown (search results)
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)
# matplotlib's "tab10" cycle, so the curves look familiar
SERIES_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                  (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans when the system has it (most Linux installs), else PIL's built-in font."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1 has a single fixed-size bitmap font
            return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


# ------------------------------------------------------------------------------------------
# rank strips
# ------------------------------------------------------------------------------------------
@dataclass
class StripLayout:
    """Geometry of a rank-strip picture (pixels).

    A cell is a thumbnail (``thumb_height`` x ``thumb_width``) inside a coloured border of
    ``border`` pixels, with ``label_height`` pixels of text below: ``cell_width = thumb_width +
    2 border``, ``cell_height = thumb_height + 2 border + label_height``. Row r, column c
    (c = 0 the query, 1..k the gallery) has its top-left corner at
    ``x = gap + c (cell_width + gap) + (2 gap if c >= 1 else 0)``, ``y = gap + r (cell_height + gap)``
    (the query column is set apart by two extra gaps). A picture of R rows and k gallery columns
    is ``(k + 1) cell_width + (k + 4) gap`` wide and ``R cell_height + (R + 1) gap`` high.
    """

    thumb_height: int = 128
    thumb_width: int = 64
    border: int = 4
    gap: int = 6
    label_height: int = 16

    @property
    def cell_width(self) -> int:
        return self.thumb_width + 2 * self.border

    @property
    def cell_height(self) -> int:
        return self.thumb_height + 2 * self.border + self.label_height

    def canvas_size(self, rows: int, k: int) -> Tuple[int, int]:
        """Returns: (width, height) of a picture with ``rows`` queries and ``k`` gallery columns."""
        return ((k + 1) * self.cell_width + (k + 4) * self.gap, rows * self.cell_height + (rows + 1) * self.gap)

    def cell_origin(self, row: int, col: int) -> Tuple[int, int]:
        """Returns: (x, y) of the top-left corner of cell (row, col); col 0 is the query."""
        x = self.gap + col * (self.cell_width + self.gap) + (2 * self.gap if col >= 1 else 0)
        return x, self.gap + row * (self.cell_height + self.gap)


def _open_thumbnail(path: str, layout: StripLayout) -> Image.Image:
    if not os.path.isfile(path):
        raise InputFileError(
            f"Image {path} (listed in the results file) not found: the dataset moved since the evaluation? "
            f"Run the tool where the images are, or re-run the evaluation with TEST.SAVE_RESULTS True.")
    with Image.open(path) as img:
        return img.convert("RGB").resize((layout.thumb_width, layout.thumb_height), Image.BILINEAR)


def _draw_cell(canvas: Image.Image, draw: ImageDraw.ImageDraw, layout: StripLayout, row: int, col: int,
               path: str, colour, label: str, font) -> None:
    x, y = layout.cell_origin(row, col)
    draw.rectangle([x, y, x + layout.cell_width - 1, y + layout.thumb_height + 2 * layout.border - 1], fill=colour)
    canvas.paste(_open_thumbnail(path, layout), (x + layout.border, y + layout.border))
    tw = _text_width(draw, label, font)
    ty = y + layout.thumb_height + 2 * layout.border + 1
    draw.text((x + max(0, (layout.cell_width - tw) // 2), ty), label, fill=TEXT_COLOUR, font=font)


def draw_rank_strips(query_paths: Sequence[str], gallery_paths: Sequence[str], topk_indices, topk_distances,
                     query_pids=None, gallery_pids=None, layout: Optional[StripLayout] = None) -> Image.Image:
    """Draw one row per query: the query, then its ranked gallery images.

    Args:
        query_paths: the R query images (one row each).
        gallery_paths: all gallery image paths (indexed by ``topk_indices``).
        topk_indices: (R, k) gallery indices, best first.
        topk_distances: (R, k) distances, printed under each gallery image.
        query_pids / gallery_pids: identities; when given, gallery borders are green
            (``MATCH_COLOUR``) for the query's identity and red (``MISMATCH_COLOUR``) otherwise;
            when None, grey (``UNKNOWN_COLOUR``).
        layout: geometry (default :class:`StripLayout`).

    Returns:
        The RGB picture, of size ``layout.canvas_size(R, k)``.
    """
    layout = layout or StripLayout()
    idx = np.asarray(topk_indices, dtype=np.int64).reshape(len(query_paths), -1)
    dist = np.asarray(topk_distances, dtype=np.float64).reshape(idx.shape)
    rows, k = idx.shape
    if rows == 0 or k == 0:
        raise InvalidInputError(f"Nothing to draw: {rows} queries x {k} gallery columns.")
    canvas = Image.new("RGB", layout.canvas_size(rows, k), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(8, layout.label_height - 4))
    known = query_pids is not None and gallery_pids is not None
    for r in range(rows):
        q_label = f"id {int(query_pids[r])}" if query_pids is not None else "query"
        _draw_cell(canvas, draw, layout, r, 0, str(query_paths[r]), QUERY_COLOUR, q_label, font)
        for c in range(k):
            g = int(idx[r, c])
            if known:
                colour = MATCH_COLOUR if int(gallery_pids[g]) == int(query_pids[r]) else MISMATCH_COLOUR
            else:
                colour = UNKNOWN_COLOUR
            _draw_cell(canvas, draw, layout, r, c + 1, str(gallery_paths[g]), colour, f"{dist[r, c]:.3f}", font)
    return canvas


def load_ranking(path: str) -> Dict[str, np.ndarray]:
    """Read a ``<dataset>_results.npz`` written with ``TEST.SAVE_RESULTS True``.

    Returns:
        ``{key: array}`` for every key of ``NPZ_KEYS``.
    """
    if not os.path.isfile(path):
        raise InputFileError(f"Results file {path} not found: evaluate with TEST.SAVE_RESULTS True "
                             f"(it writes OUTPUT_DIR/<dataset>_results.npz).")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in NPZ_KEYS if k not in data.files]
        if missing:
            raise InvalidInputError(f"{path} is not a saved ranking: missing {missing} (see docs/EVALUATION.md).")
        out = {k: data[k] for k in NPZ_KEYS}
    if out["topk_indices"].shape[1] == 0:
        raise InvalidInputError(f"{path} holds no ranked lists (TEST.SAVE_TOPK was 0): re-run the evaluation with "
                                f"TEST.SAVE_TOPK > 0.")
    return out


def query_scores(ranking: Dict[str, np.ndarray], topk: Optional[int] = None) -> np.ndarray:
    """Per-query retrieval quality within the saved top-k: AP@k.

    AP@k = (sum over correct items at ranks i <= k of precision@i) / min(k, M), with M the
    query's true matches in the gallery (same identity, other camera, as the evaluation keeps
    them). 1 = every slot that can be correct is; 0 = no match in the top-k.

    Args:
        ranking: from :func:`load_ranking`.
        topk: use the first ``topk`` saved columns (default all).

    Returns:
        (Q,) float64 scores; queries without any true match score NaN.
    """
    idx = ranking["topk_indices"][:, :topk] if topk else ranking["topk_indices"]
    k = idx.shape[1]
    qp, gp = ranking["query_pids"], ranking["gallery_pids"]
    qc, gc = ranking["query_camids"], ranking["gallery_camids"]
    hits = gp[idx] == qp[:, None]
    prec = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    matches = ((gp[None, :] == qp[:, None]) & (gc[None, :] != qc[:, None])).sum(axis=1)
    denom = np.minimum(matches, k).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(matches > 0, (prec * hits).sum(axis=1) / denom, np.nan)


ORDERS = ("index", "worst", "best")


def visualize_ranking(results_path: str, output_path: str, num_queries: int = 10, topk: int = 10,
                      order: str = "index", query_indices: Optional[Sequence[int]] = None,
                      layout: Optional[StripLayout] = None) -> List[int]:
    """Draw rank strips from a saved evaluation and write them as a PNG.

    Args:
        results_path: ``<dataset>_results.npz``.
        output_path: the PNG to write (its folder is created).
        num_queries: rows to draw.
        topk: gallery columns (at most the saved ``TEST.SAVE_TOPK``).
        order: "index" (dataset order), "worst" (lowest AP@k first, see :func:`query_scores`) or
            "best"; queries without a true match are left out of "worst"/"best".
        query_indices: explicit query rows to draw (overrides ``order``/``num_queries``).
        layout: geometry (default :class:`StripLayout`).

    Returns:
        The query indices drawn, top row first.
    """
    if order not in ORDERS:
        raise InvalidInputError(f"Unknown order {order!r}; valid: {', '.join(ORDERS)}.")
    ranking = load_ranking(results_path)
    saved_k = ranking["topk_indices"].shape[1]
    if topk > saved_k:
        logger.warning(f"{results_path} keeps only the top {saved_k} (TEST.SAVE_TOPK); drawing {saved_k} columns.")
    k = max(1, min(int(topk), saved_k))
    nq = ranking["topk_indices"].shape[0]
    if query_indices is not None:
        rows = [int(i) for i in query_indices]
        bad = [i for i in rows if not 0 <= i < nq]
        if bad:
            raise InvalidInputError(f"Query indices {bad} out of range: the file has {nq} queries (0..{nq - 1}).")
    elif order == "index":
        rows = list(range(min(num_queries, nq)))
    else:
        scores = query_scores(ranking, k)
        valid = np.flatnonzero(~np.isnan(scores))
        key = scores[valid] if order == "worst" else -scores[valid]
        rows = valid[np.argsort(key, kind="stable")][:num_queries].tolist()
    if not rows:
        raise InvalidInputError(f"No query to draw from {results_path}.")
    picture = draw_rank_strips(ranking["query_paths"][rows], ranking["gallery_paths"],
                               ranking["topk_indices"][rows, :k], ranking["topk_distances"][rows, :k],
                               ranking["query_pids"][rows], ranking["gallery_pids"], layout)
    save_png(picture, output_path)
    return rows


def save_png(picture: Image.Image, path: str) -> None:
    """Write ``picture`` as a PNG at ``path``, creating its folder."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    picture.save(path, format="PNG", optimize=True)


# ------------------------------------------------------------------------------------------
# training curves
# ------------------------------------------------------------------------------------------
def read_metrics(path: str) -> List[Dict]:
    """Read a JSON-lines metrics file (``OUTPUT_DIR/metrics.json``).

    Returns:
        The records (dicts), in file order; blank lines are skipped.

    Raises:
        ValueError: a line is not a JSON object (names the file and line number).
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


# (panel title, which scalar keys it shows), in drawing order; empty panels are left out
CURVE_GROUPS: List[Tuple[str, Callable[[str], bool]]] = [
    ("training losses", lambda k: k.startswith("loss_") or k == "total_loss"),
    ("stage-1 losses (CLIP-ReID prompt learning)", lambda k: k.startswith("stage1_") and k != "stage1_lr"),
    ("learning rate", lambda k: k in ("lr", "stage1_lr")),
    ("evaluation (%)", _is_eval_metric),
]

_TITLE_HEIGHT = 28   # title and legend band at the top of each panel
_MARGIN_LEFT = 64    # y tick labels
_MARGIN_RIGHT = 16
_MARGIN_BOTTOM = 30  # x tick labels and axis name


def _series(records: List[Dict], keep: Callable[[str], bool]) -> Dict[str, List[Tuple[float, float]]]:
    out: Dict[str, List[Tuple[float, float]]] = {}
    for i, rec in enumerate(records):
        x = rec.get("iteration", i)
        for k, v in rec.items():
            if k in ("iteration", "epoch") or not keep(k):
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.setdefault(k, []).append((float(x), float(v)))
    for pts in out.values():
        pts.sort(key=lambda p: p[0])  # stable: equal iterations keep file order
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


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:.1e}" if abs(v) < 1e-2 or abs(v) >= 1e5 else f"{v:.3g}"  # fits the 64-pixel margin


def _padded_range(lo: float, hi: float, pad: float) -> Tuple[float, float]:
    if hi <= lo:
        half = abs(lo) * 0.1 or 1.0
        return lo - half, hi + half
    d = (hi - lo) * pad
    return lo - d, hi + d


def _draw_panel(draw: ImageDraw.ImageDraw, top: int, width: int, height: int, title: str,
                series: Dict[str, List[Tuple[float, float]]], font, colour_of: Dict[str, tuple],
                xrange: Tuple[float, float]) -> None:
    x0, x1 = _MARGIN_LEFT, width - _MARGIN_RIGHT
    y0, y1 = top + _TITLE_HEIGHT, top + height - _MARGIN_BOTTOM
    ys = [p[1] for pts in series.values() for p in pts]
    xlo, xhi = xrange
    ylo, yhi = _padded_range(min(ys), max(ys), 0.05)
    if min(ys) >= 0:
        ylo = max(ylo, 0.0)  # losses, rates, percentages: no negative axis

    def px(x):
        return x0 + (x - xlo) / (xhi - xlo) * (x1 - x0)

    def py(y):
        return y1 - (y - ylo) / (yhi - ylo) * (y1 - y0)

    for i in range(5):  # grid and ticks
        yv = ylo + (yhi - ylo) * i / 4
        yy = py(yv)
        draw.line([(x0, yy), (x1, yy)], fill=(225, 225, 225))
        label = _fmt(yv)
        draw.text((x0 - 6 - _text_width(draw, label, font), yy - 7), label, fill=TEXT_COLOUR, font=font)
        xv = xlo + (xhi - xlo) * i / 4
        xx = px(xv)
        draw.line([(xx, y1), (xx, y1 + 4)], fill=TEXT_COLOUR)
        label = f"{xv:.0f}"
        draw.text((xx - _text_width(draw, label, font) / 2, y1 + 5), label, fill=TEXT_COLOUR, font=font)
    draw.rectangle([x0, y0, x1, y1], outline=TEXT_COLOUR)
    draw.text((2, y1 + 14), "iteration", fill=TEXT_COLOUR, font=font)  # x axis name, below the y labels
    for name, pts in series.items():
        points = [(px(x), py(y)) for x, y in pts]
        if len(points) > 1:
            draw.line(points, fill=colour_of[name], width=2)
        if len(points) <= 30:  # few points (evaluations): mark each one
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour_of[name])

    # title then legend, left to right in the band above the plot (wrapping into the plot)
    draw.text((x0, top + 7), title, fill=TEXT_COLOUR, font=font)
    lx, ly = x0 + _text_width(draw, title, font) + 16, top + 7
    for name in series:
        tw = _text_width(draw, name, font)
        if lx + 13 + tw > width - _MARGIN_RIGHT:  # wrap: further lines go inside the plot
            lx, ly = x0 + 6, ly + 16
        if ly > top + 7:  # on white, so the curves under it do not hide the text
            draw.rectangle([lx - 3, ly - 1, lx + 13 + tw + 3, ly + 14], fill=BACKGROUND)
        draw.rectangle([lx, ly + 2, lx + 9, ly + 11], fill=colour_of[name])
        draw.text((lx + 13, ly), name, fill=TEXT_COLOUR, font=font)
        lx += 13 + tw + 14


def plot_training_curves(metrics: Union[str, List[Dict]], output_path: str, panel_size: Tuple[int, int] = (720, 240),
                         groups: Optional[List[Tuple[str, Callable[[str], bool]]]] = None) -> List[str]:
    """Draw training curves from a metrics file as one PNG.

    One panel per non-empty group of ``groups`` (default ``CURVE_GROUPS``: training losses,
    stage-1 losses, learning rate, evaluation metrics ``<dataset>/<metric>``), stacked
    vertically; x is the ``iteration`` of each record, on one range shared by all panels.
    Inside a panel the series are sorted by name (numbers as numbers: Rank-1, Rank-5, Rank-10)
    and take ``SERIES_COLOURS`` in that order; when every series of a panel belongs to one
    dataset, its name moves to the title. The top 28 pixels of a panel hold the title and the
    legend (a legend too long for the line wraps into the plot); the plot area spans x in
    [64, width - 16] and y in [28, height - 30] of the panel.

    Args:
        metrics: path of ``metrics.json`` or its records (see :func:`read_metrics`).
        output_path: the PNG to write.
        panel_size: (width, height) of one panel.
        groups: (title, key predicate) pairs.

    Returns:
        Titles of the panels drawn, top to bottom.
    """
    records = read_metrics(metrics) if isinstance(metrics, str) else list(metrics)
    panels = []
    for title, keep in groups or CURVE_GROUPS:
        series = _series(records, keep)
        if series:
            panels.append(_strip_common_dataset(title, series))
    if not panels:
        raise InvalidInputError(f"No plottable scalar in {metrics if isinstance(metrics, str) else 'the records'}: "
                                f"expected keys like loss_*, total_loss, lr or <dataset>/mAP.")
    width, height = panel_size
    picture = Image.new("RGB", (width, height * len(panels)), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    font = _font(12)
    # one x range for all panels, so an evaluation lines up with the losses of the same iteration
    xs = [p[0] for _, series in panels for pts in series.values() for p in pts]
    xrange = _padded_range(min(xs), max(xs), 0.0)
    for i, (title, series) in enumerate(panels):
        colour_of = {name: SERIES_COLOURS[j % len(SERIES_COLOURS)] for j, name in enumerate(series)}
        _draw_panel(draw, i * height, width, height, title, series, font, colour_of, xrange)
    save_png(picture, output_path)
    return [t for t, _ in panels]
