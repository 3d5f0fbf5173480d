"""Ranked-list strips (PIL): one row per query, the query then its top-k gallery images.

:func:`visualize_ranking` reads a finished evaluation's ``<dataset>_results.npz``
(``TEST.SAVE_RESULTS True``; format in docs/EVALUATION.md) and draws each query's top-k with a
green border (same identity) or red border (different identity) and the distance under each.
Queries can be shown worst or best first. Every crop keeps its aspect ratio (see
:class:`StripLayout`).
"""

import dataclasses
import logging
import os
import zipfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from clipreid_plugin.data.decode import read_image, upright_size
from clipreid_plugin.evaluation.results import NPZ_KEYS
from clipreid_plugin.utils.errors import InputFileError, InvalidInputError
from clipreid_plugin.utils.file_io import atomic_write
from clipreid_plugin.utils.plotting import fit_text, pil_font, text_size

__all__ = ["MATCH_COLOUR", "MISMATCH_COLOUR", "QUERY_COLOUR", "UNKNOWN_COLOUR", "LETTERBOX_COLOUR", "StripLayout",
           "draw_rank_strips", "save_png", "load_ranking", "query_scores", "visualize_ranking", "ORDERS"]

logger = logging.getLogger(__name__)


MATCH_COLOUR = (0, 180, 0)        # border of a gallery image with the query's identity


MISMATCH_COLOUR = (220, 0, 0)     # border of a gallery image with another identity


QUERY_COLOUR = (40, 90, 230)      # border of the query image


UNKNOWN_COLOUR = (150, 150, 150)  # border when identities are unknown (search results)


LETTERBOX_COLOUR = (235, 235, 235)  # inside a thumbnail box, around a crop of another shape


BACKGROUND = (255, 255, 255)


TEXT_COLOUR = (0, 0, 0)


# ------------------------------------------------------------------------------------------
# rank strips
# ------------------------------------------------------------------------------------------
@dataclass
class StripLayout:
    """Geometry of a rank-strip picture (pixels).

    A cell is a thumbnail box (``thumb_height`` x ``thumb_width``) inside a coloured border of
    ``border`` pixels, with ``label_lines`` lines of ``label_height`` pixels of text below:
    ``cell_width = thumb_width + 2 border``, ``cell_height = thumb_height + 2 border +
    label_lines label_height``. Row r, column c (c = 0 the query, 1..k the gallery) has its
    top-left corner at ``x = gap + c (cell_width + gap) + (2 gap if c >= 1 else 0)``,
    ``y = gap + r (cell_height + gap)`` (the query column is set apart by two extra gaps). A
    picture of R rows and k gallery columns is ``(k + 1) cell_width + (k + 4) gap`` wide and
    ``R cell_height + (R + 1) gap`` high.

    Every crop keeps its aspect ratio: it is scaled to fit the box and centred, the rest of the
    box is ``LETTERBOX_COLOUR``. ``thumb_width=None`` sizes the box to the crops drawn:
    ``thumb_height`` times their median width/height ratio (2:1 person crops get 2:1 boxes,
    square-ish vehicle crops square-ish ones), see :meth:`for_images`.
    """

    thumb_height: int = 128
    thumb_width: Optional[int] = None
    border: int = 4
    gap: int = 6
    label_height: int = 16
    label_lines: int = 1

    @property
    def cell_width(self) -> int:
        if self.thumb_width is None:
            raise InvalidInputError("StripLayout.thumb_width is not set: call layout.for_images(paths) first.")
        return self.thumb_width + 2 * self.border

    @property
    def cell_height(self) -> int:
        return self.thumb_height + 2 * self.border + self.label_lines * self.label_height

    def canvas_size(self, rows: int, k: int) -> Tuple[int, int]:
        """Returns: (width, height) of a picture with ``rows`` queries and ``k`` gallery columns."""
        return ((k + 1) * self.cell_width + (k + 4) * self.gap, rows * self.cell_height + (rows + 1) * self.gap)

    def cell_origin(self, row: int, col: int) -> Tuple[int, int]:
        """Returns: (x, y) of the top-left corner of cell (row, col); col 0 is the query."""
        x = self.gap + col * (self.cell_width + self.gap) + (2 * self.gap if col >= 1 else 0)
        return x, self.gap + row * (self.cell_height + self.gap)

    def for_images(self, paths: Sequence[str]) -> "StripLayout":
        """The layout with its box width set for these crops.

        Args:
            paths: the images that will be drawn (only their headers are read).

        Returns:
            ``self`` when ``thumb_width`` is set; else a copy with ``thumb_width =
            round(thumb_height * median(width / height))``, kept within [thumb_height / 4,
            4 thumb_height].
        """
        if self.thumb_width is not None:
            return self
        ratios = []
        for path in dict.fromkeys(map(str, paths)):
            w, h = _image_size(path)
            ratios.append(w / h)
        ratio = float(np.median(ratios)) if ratios else 0.5
        width = int(round(self.thumb_height * min(max(ratio, 0.25), 4.0)))
        return dataclasses.replace(self, thumb_width=max(1, width))


def _missing_image(path: str) -> InputFileError:
    return InputFileError(
        f"Image {path} (listed in the results file) not found: the dataset moved since the evaluation? "
        f"Run the tool where the images are, or re-run the evaluation with TEST.SAVE_RESULTS True.")


def _image_size(path: str) -> Tuple[int, int]:
    if not os.path.isfile(path):
        raise _missing_image(path)
    return upright_size(path)


def _open_thumbnail(path: str, layout: StripLayout) -> Image.Image:
    """The crop scaled to fit the box, aspect ratio kept, centred on ``LETTERBOX_COLOUR``."""
    if not os.path.isfile(path):
        raise _missing_image(path)
    box_w, box_h = layout.thumb_width, layout.thumb_height
    img = read_image(path)
    scale = min(box_w / img.width, box_h / img.height)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    crop = img.resize((w, h), Image.BILINEAR)
    thumb = Image.new("RGB", (box_w, box_h), LETTERBOX_COLOUR)
    thumb.paste(crop, ((box_w - w) // 2, (box_h - h) // 2))
    return thumb


def _name_label(draw: ImageDraw.ImageDraw, path: str, font, width: int) -> str:
    """The file name when it fits ``width`` pixels, else its stem shortened in the middle."""
    name = os.path.basename(path)
    if text_size(draw, name, font)[0] <= width:
        return name
    return fit_text(draw, os.path.splitext(name)[0], font, width)


def _draw_cell(canvas: Image.Image, draw: ImageDraw.ImageDraw, layout: StripLayout, row: int, col: int,
               path: str, colour, labels: Sequence[str], font) -> None:
    x, y = layout.cell_origin(row, col)
    draw.rectangle([x, y, x + layout.cell_width - 1, y + layout.thumb_height + 2 * layout.border - 1], fill=colour)
    canvas.paste(_open_thumbnail(path, layout), (x + layout.border, y + layout.border))
    ty = y + layout.thumb_height + 2 * layout.border + 1
    for line in labels[:layout.label_lines]:
        text = fit_text(draw, line, font, layout.cell_width)
        tw = text_size(draw, text, font)[0]
        draw.text((x + max(0, (layout.cell_width - tw) // 2), ty), text, fill=TEXT_COLOUR, font=font)
        ty += layout.label_height


def draw_rank_strips(query_paths: Sequence[str], gallery_paths: Sequence[str], topk_indices, topk_distances,
                     query_pids=None, gallery_pids=None, layout: Optional[StripLayout] = None,
                     show_names: bool = False) -> Image.Image:
    """Draw one row per query: the query, then its ranked gallery images.

    Args:
        query_paths: the R query images (one row each).
        gallery_paths: all gallery image paths (indexed by ``topk_indices``).
        topk_indices: (R, k) gallery indices, best first.
        topk_distances: (R, k) distances, printed under each gallery image.
        query_pids / gallery_pids: identities; when given, gallery borders are green
            (``MATCH_COLOUR``) for the query's identity and red (``MISMATCH_COLOUR``) otherwise;
            when None, grey (``UNKNOWN_COLOUR``).
        layout: geometry (default :class:`StripLayout`: 128 pixels high, box width from the
            crops' aspect ratio).
        show_names: label every image with its file name (when too wide for the cell, its stem
            shortened in the middle: ``0041_c…322_01``),
            the gallery's distance on a second line; otherwise the query shows its identity
            ("query" when unknown) and the gallery its distance.

    Returns:
        The RGB picture, of size ``layout.canvas_size(R, k)`` (with the box width and label
        lines the picture used).
    """
    idx = np.asarray(topk_indices, dtype=np.int64).reshape(len(query_paths), -1)
    dist = np.asarray(topk_distances, dtype=np.float64).reshape(idx.shape)
    rows, k = idx.shape
    if rows == 0 or k == 0:
        raise InvalidInputError(f"Nothing to draw: {rows} queries x {k} gallery columns.")
    shown = [str(p) for p in query_paths] + [str(gallery_paths[int(g)]) for g in idx.ravel()]
    layout = (layout or StripLayout()).for_images(shown)
    if show_names and layout.label_lines < 2:
        layout = dataclasses.replace(layout, label_lines=2)
    canvas = Image.new("RGB", layout.canvas_size(rows, k), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = pil_font(max(8, layout.label_height - 4))
    known = query_pids is not None and gallery_pids is not None
    for r in range(rows):
        q_path = str(query_paths[r])
        if show_names:
            q_labels = [_name_label(draw, q_path, font, layout.cell_width), "query"]
        else:
            q_labels = [f"id {int(query_pids[r])}" if query_pids is not None else "query"]
        _draw_cell(canvas, draw, layout, r, 0, q_path, QUERY_COLOUR, q_labels, font)
        for c in range(k):
            g = int(idx[r, c])
            if known:
                colour = MATCH_COLOUR if int(gallery_pids[g]) == int(query_pids[r]) else MISMATCH_COLOUR
            else:
                colour = UNKNOWN_COLOUR
            g_path = str(gallery_paths[g])
            d_label = f"{dist[r, c]:.3f}"
            labels = [_name_label(draw, g_path, font, layout.cell_width), d_label] if show_names else [d_label]
            _draw_cell(canvas, draw, layout, r, c + 1, g_path, colour, labels, font)
    return canvas


def load_ranking(path: str) -> Dict[str, np.ndarray]:
    """Read a ``<dataset>_results.npz`` written with ``TEST.SAVE_RESULTS True``.

    Returns:
        ``{key: array}`` for every key of ``NPZ_KEYS``.
    """
    if not os.path.isfile(path):
        raise InputFileError(f"Results file {path} not found: evaluate with TEST.SAVE_RESULTS True "
                             f"(it writes OUTPUT_DIR/<dataset>_results.npz).")
    if not zipfile.is_zipfile(path):  # an .npz is a zip archive; results.json, a .npy, ... are not
        raise InvalidInputError(f"{path} is not a saved ranking: --results wants the OUTPUT_DIR/<dataset>_results.npz "
                                f"that an evaluation with TEST.SAVE_RESULTS True writes (results.json holds the "
                                f"metrics only).")
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
    """Atomically write ``picture`` as a PNG at ``path``, creating its folder.

    Raises:
        OutputWriteError: the file cannot be written (naming ``path`` and the cause).
    """
    atomic_write(path, lambda f: picture.save(f, format="PNG", optimize=True))
