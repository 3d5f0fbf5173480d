"""``report.html``: one self-contained page to browse a benchmark (no server, no internet).

Every picture is a PNG embedded as a ``data:`` URI, the style sheet is inline and the page has
no script, so the file can be mailed or opened from any folder. Sections:

1. the table (mean ± std (min-max) over seeds where there are seeds);
2. the paired comparisons: differences with their bootstrap intervals, win shares;
3. the bar chart (:func:`~.tables.chart_figure`);
4. the transfer matrix (cross-domain rows only);
5. Rank-1 / mAP per camera pair of each row;
6. for each comparison, the queries where the two methods disagree most: the query and each
   method's top-k side by side (green border = same identity, red = another), from the first
   seed's run of each (``TEST.PER_QUERY.TOPK``, which benchmark runs set);
7. the training curves of every run (``metrics.json``; :func:`~clipreid_plugin.usertools.training_curves.curves_figure`).

Pictures need matplotlib (the ``[plots]`` extra) for charts and curves; without it those
sections say so and the rest is written.
"""

import base64
import datetime
import html
import io
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

from clipreid_plugin.usertools.rank_strips import draw_rank_strips
from clipreid_plugin.usertools.training_curves import curves_figure
from clipreid_plugin.utils.errors import ToolkitError
from clipreid_plugin.utils.file_io import atomic_write_text
from clipreid_plugin.utils.plotting import require_pyplot

from .comparisons import compare_rows, default_pairs
from .pair_tables import format_interval, transfer_matrix, write_comparison_outputs
from .paired import PAIRED_METRICS
from .records import dataset_rows
from .seeds import record_runs
from .tables import chart_figure, table_cells, table_columns

__all__ = ["REPORT_FILE", "write_report", "report_html", "compare_and_report"]

logger = logging.getLogger("clipreid_plugin.comparison")

REPORT_FILE = "report.html"
RANKED_QUERIES = 4  # queries shown per comparison, where the methods disagree most
RANKED_TOPK = 6

_STYLE = """
body { font-family: system-ui, -apple-system, 'DejaVu Sans', sans-serif; margin: 24px auto; max-width: 1300px;
       color: #222; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin-bottom: 6px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
.note { color: #666; font-size: 13px; } .sig { font-weight: bold; color: #0a6a0a; }
.neg { font-weight: bold; color: #a01010; } img { max-width: 100%; }
.strip { margin: 4px 0 14px 0; } .strip figcaption { font-size: 13px; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
.wide { overflow-x: auto; } figure { margin: 0; } .row { display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: flex-start; }
.query h4 { margin: 10px 0 2px 0; font-size: 14px; }
"""


def _esc(text) -> str:
    return html.escape(str(text))


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure_uri(fig) -> str:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight")
    finally:
        require_pyplot().close(fig)
    return _png_uri(buf.getvalue())


def _picture_uri(picture) -> str:
    buf = io.BytesIO()
    picture.save(buf, format="PNG", optimize=True)
    return _png_uri(buf.getvalue())


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_esc(alt)}">'


def _results_table(records: Sequence[Dict]) -> str:
    rows = [r for rec in records for r in dataset_rows(rec)]
    cols = table_columns(rows)
    head = "".join(f'<th class="{"name" if i < 4 else ""}">{_esc(c.header)}</th>' for i, c in enumerate(cols))
    body = []
    for row, cells in zip(rows, table_cells(rows, cols)):
        tds = "".join(f'<td class="{"name" if i < 4 else ""}">{_esc(v)}</td>' for i, v in enumerate(cells))
        body.append(f'<tr data-method="{_esc(row["method"])}">{tds}</tr>')
    return f'<div class="wide"><table id="results"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _interval_cell(m: Dict) -> str:
    cls = "sig" if m["low"] > 0 else "neg" if m["high"] < 0 else ""
    return f'<td class="{cls}">{_esc(format_interval(m))}</td>'


def _comparisons_table(comparisons: Sequence[Dict]) -> str:
    if not comparisons:
        return '<p class="note">No paired comparison (one method, or runs without per-query results).</p>'
    conf = int(round(comparisons[0]["confidence"] * 100))
    head = ('<tr><th class="name">B - A</th><th class="name">dataset</th><th>seeds A/B</th><th>queries (ids)</th>'
            + "".join(f"<th>Δ {m} [{conf}% CI]</th>" for m in PAIRED_METRICS)
            + "<th>B wins</th><th>A wins</th><th>ties</th></tr>")
    body = []
    for c in comparisons:
        body.append(f'<tr><td class="name">{_esc(c["b"])} - {_esc(c["a"])}</td><td class="name">{_esc(c["dataset"])}</td>'
                    f'<td>{c["seeds_a"]}/{c["seeds_b"]}</td><td>{c["num_queries"]} ({c["num_identities"]})</td>'
                    + "".join(_interval_cell(c["metrics"][m]) for m in PAIRED_METRICS)
                    + f'<td>{c["b_wins"] * 100:.0f}%</td><td>{c["a_wins"] * 100:.0f}%</td><td>{c["ties"] * 100:.0f}%</td></tr>')
    return (f'<table id="comparisons"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
            f'<p class="note">Differences are B - A in percentage points, with a {conf}% paired bootstrap interval '
            f'over the queries that resamples identities ({comparisons[0]["num_resamples"]} resamples); green: the '
            f'interval is above 0, red: below. With seeds, each query\'s numbers are first averaged over the seeds. '
            f'Wins: share of queries where one method\'s (seed-averaged) AP is higher.</p>')


def _transfer_html(records: Sequence[Dict]) -> Optional[str]:
    found = transfer_matrix(records)
    if found is None:
        return None
    methods, columns, cells = found
    head = '<tr><th class="name">method (mAP / R-1)</th>' + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr>"
    body = []
    for m in methods:
        tds = []
        for c in columns:
            v = cells.get((m, c)) or {}
            tds.append("<td>-</td>" if v.get("mAP") is None else f"<td>{v['mAP']:.1f} / {v.get('Rank-1', 0):.1f}</td>")
        body.append(f'<tr><td class="name">{_esc(m)}</td>{"".join(tds)}</tr>')
    return f'<table id="transfer"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _camera_pairs_html(records: Sequence[Dict]) -> str:
    parts = []
    for rec in records:
        for ds, table in (rec.get("camera_pairs") or {}).items():
            for metric in ("Rank-1", "mAP"):
                head = f'<tr><th class="name">{metric}</th>' + "".join(
                    f"<th>g cam {g}</th>" for g in table["gallery_cameras"]) + "</tr>"
                body = "".join(f'<tr><td class="name">q cam {qc}</td>'
                               + "".join("<td>-</td>" if v is None else f"<td>{v:.1f}</td>" for v in row) + "</tr>"
                               for qc, row in zip(table["query_cameras"], table[metric]))
                parts.append(f'<div><h3>{_esc(rec["method"])} on {_esc(ds)}: {metric} (%)</h3>'
                             f'<table class="camera-pairs"><thead>{head}</thead><tbody>{body}</tbody></table></div>')
    if not parts:
        return '<p class="note">No camera-pair breakdown (evaluate with TEST.PER_QUERY.CAMERA_PAIRS True).</p>'
    return ('<p class="note">Each query ranked against the gallery images of one camera alone (rows: query camera, '
            'columns: gallery camera; seed means). Under the Market-1501 protocol a query\'s own camera holds none '
            'of its matches, hence the empty diagonal.</p><div class="row">' + "".join(parts) + "</div>")


def _strip_uri(per_query: Dict, q: int) -> str:
    k = min(RANKED_TOPK, per_query["topk_indices"].shape[1])
    picture = draw_rank_strips(per_query["query_paths"][[q]], per_query["gallery_paths"],
                               per_query["topk_indices"][[q], :k], per_query["topk_distances"][[q], :k],
                               per_query["query_pids"][[q]], per_query["gallery_pids"])
    return _picture_uri(picture)


def _disagreements_html(comparisons: Sequence[Dict]) -> str:
    parts = []
    for c in comparisons:
        title = f'{_esc(c["b"])} vs {_esc(c["a"])} on {_esc(c["dataset"])}'
        runs = (("a", c["runs_a"]), ("b", c["runs_b"]))
        if not all("topk_indices" in r for _, r in runs):
            parts.append(f'<h3>{title}</h3><p class="note">No ranked lists in the per-query files (evaluate with '
                         f'TEST.PER_QUERY.TOPK 10).</p>')
            continue
        rows = []
        for q in c["queries"]:
            try:
                strips = [(side, r["ap"][q], _strip_uri(r, q)) for side, r in runs]
            except (ToolkitError, OSError) as e:
                rows.append(f'<p class="note">Query {q}: {_esc(e)}</p>')
                break
            figs = "".join(f'<figure class="strip"><figcaption>{_esc(c[side])}: AP {ap * 100:.1f}</figcaption>'
                           f'{_img(uri, c[side] + " top-k")}</figure>' for side, ap, uri in strips)
            name = os.path.basename(str(c["runs_a"]["query_paths"][q]))
            rows.append(f'<div class="query"><h4>query {q} ({_esc(name)}, identity '
                        f'{int(c["runs_a"]["query_pids"][q])})</h4><div class="row">{figs}</div></div>')
        parts.append(f'<h3>{title}</h3>' + ("".join(rows) or '<p class="note">The methods agree on every query.</p>'))
    if not parts:
        return '<p class="note">No comparison.</p>'
    return ('<p class="note">Queries where the two methods\' AP differ most (first seed of each). Each strip: the '
            'query (blue), then that method\'s top-k; green border = same identity, red = another.</p>'
            + "".join(parts))


def _curves_html(records: Sequence[Dict]) -> str:
    parts = []
    for rec in records:
        for run in record_runs(rec):
            path = os.path.join(run["output_dir"], "metrics.json")
            label = rec["method"] + ("" if run.get("seed") is None else f" seed {run['seed']}")
            label += f" ({', '.join(rec.get('datasets') or [])})"
            if not os.path.isfile(path):
                parts.append(f'<p class="note">{_esc(label)}: no {_esc(path)}.</p>')
                continue
            try:
                fig, _ = curves_figure(path)
                parts.append(f"<details open><summary>{_esc(label)}</summary>{_img(_figure_uri(fig), label)}</details>")
            except ToolkitError as e:
                parts.append(f'<p class="note">{_esc(label)}: {_esc(e)}</p>')
    return "".join(parts) or '<p class="note">No run.</p>'


def report_html(records: Sequence[Dict], comparisons: Sequence[Dict], title: str = "Benchmark") -> str:
    """Build the page (see the module docstring).

    Args:
        records: the table rows.
        comparisons: :func:`~.comparisons.compare_rows` results with ``disagreements``.
        title: the page title.

    Returns:
        The HTML text.
    """
    try:
        chart = _img(_figure_uri(chart_figure(records)), "mAP and Rank-1 per method")
    except ToolkitError as e:
        chart = f'<p class="note">Chart skipped: {_esc(e)}</p>'
    transfer = _transfer_html(records)
    sections = [("Results", _results_table(records) + '<p class="note">Percent. With seeds: mean ± std (min-max) '
                 'over the seeds.</p>'),
                ("Paired comparisons", _comparisons_table(comparisons)),
                ("Chart", chart)]
    if transfer:
        sections.append(("Transfer matrix (train -> test)", transfer))
    sections += [("Per camera pair", _camera_pairs_html(records)),
                 ("Where the methods disagree", _disagreements_html(comparisons)),
                 ("Training curves", _curves_html(records))]
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "".join(f"<h2>{_esc(name)}</h2>{content}" for name, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f'<style>{_STYLE}</style></head><body><h1>{_esc(title)}</h1>'
            f'<p class="note">Written by tools/benchmark.py on {stamp}.</p>{body}</body></html>\n')


def write_report(records: Sequence[Dict], comparisons: Sequence[Dict], folder: str,
                 title: str = "Benchmark") -> str:
    """Write ``folder/report.html`` atomically.

    Returns:
        Its path.
    """
    path = os.path.join(folder, REPORT_FILE)
    atomic_write_text(path, report_html(records, comparisons, title))
    return path


def compare_and_report(records: Sequence[Dict], folder: str, pairs: Optional[Sequence[Tuple[str, str]]] = None,
                       title: str = "Benchmark", num_resamples: int = 1000) -> Tuple[List[Dict], Dict[str, str]]:
    """Compare the rows' methods, write the comparison / transfer tables and ``report.html``.

    Args:
        records: the table rows.
        folder: where to write (the benchmark's output folder).
        pairs: (A, B) method names (``--compare``: a problem is an error); None = each method
            against the first (a run without per-query results is left out with a warning).
        title: the page title.
        num_resamples: bootstrap resamples.

    Returns:
        (the comparisons, ``{file name: path}`` of the files written).
    """
    comparisons = compare_rows(records, pairs if pairs is not None else default_pairs(records),
                               strict=pairs is not None, num_resamples=num_resamples, disagreements=RANKED_QUERIES)
    paths = write_comparison_outputs(records, comparisons, folder)
    paths[REPORT_FILE] = write_report(records, comparisons, folder, title)
    return comparisons, paths
