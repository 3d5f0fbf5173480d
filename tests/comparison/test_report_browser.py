"""report.html rendered by headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it):
every image loads, one table row per method, no console error, nothing fetched from a network.

The page is loaded from a copy with a recorder script first in its ``<head>``: it wraps
``console.error``, listens to ``error`` events (script errors, and resources that fail to load,
caught in the capture phase) and, on ``load``, writes its findings as JSON into a
``<pre id="page-check">`` that ``--dump-dom`` prints. A page without that element means the
recorder did not run, which fails the test too. Chromium's own console log (``--enable-logging``)
is checked as well: the report has no script, so it must log nothing. A control page with a
broken image, a console error and an exception shows that the recorder catches each.
"""

import json
import re
import shutil
import subprocess

import pytest

from clipreid_plugin.comparison import compare_and_report, write_outputs
from clipreid_plugin.comparison.runner import collect_folders

from fake_runs import make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package 'chromium'; "
                                                          ".ci/run installs it)")

RECORDER = """<script>
(function () {
  var log = [];
  var original = console.error;
  console.error = function () { log.push("console.error: " + Array.prototype.join.call(arguments, " ")); original.apply(console, arguments); };
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { log.push("resource failed: " + String(t.src || t.href).slice(0, 100)); }
    else { log.push("error: " + e.message); }
  }, true);
  window.addEventListener("unhandledrejection", function (e) { log.push("unhandled rejection: " + e.reason); });
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var rows = Array.prototype.slice.call(document.querySelectorAll("#results tbody tr"));
    var out = {recorder: true, images: imgs.length,
               broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length,
               methods: rows.map(function (r) { return r.getAttribute("data-method"); }), errors: log};
    var pre = document.createElement("pre");
    pre.id = "page-check";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  });
})();
</script>"""


def render(html_path, tmp_path):
    """Load a copy of ``html_path`` with the recorder in headless Chromium.

    Returns:
        (the recorder's findings, Chromium's console lines).
    """
    with open(html_path, encoding="utf-8") as f:
        page = f.read()
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("<head>", "<head>" + RECORDER, 1), encoding="utf-8")
    p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()],
                       capture_output=True, text=True, timeout=240)
    found = re.search(r'<pre id="page-check">(.*?)</pre>', p.stdout, re.S)
    assert found, f"the recorder did not run (exit {p.returncode}): {p.stderr[-2000:]}"
    console = [line for line in p.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), console


def test_recorder_catches_broken_images_console_errors_and_exceptions(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><img src="missing.png">'
                   '<table id="results"><tbody><tr data-method="x"></tr></tbody></table>'
                   '<script>console.error("boom"); undefined_function();</script></body></html>')
    found, console = render(bad, tmp_path)
    assert found["images"] == 1 and found["broken"] == 1 and found["methods"] == ["x"]
    assert any("console.error: boom" in e for e in found["errors"])
    assert any("undefined_function" in e for e in found["errors"])
    assert any(e.startswith("resource failed:") and "missing.png" in e for e in found["errors"])
    assert console  # Chromium's log shows them too


def test_report_renders_every_image_one_row_per_method_and_no_console_error(tmp_path):
    make_run(tmp_path / "runs" / "bagtricks", "bagtricks", [0.5, 0.5, 1.0, 0.25, 1.0, 0.0], [2, 2, 1, 4, 1, 0])
    make_run(tmp_path / "runs" / "clipreid", "clipreid", [1.0, 0.5, 1.0, 0.5, 0.5, 0.0], [1, 2, 1, 2, 2, 0])
    records = collect_folders([str(tmp_path / "runs" / "bagtricks"), str(tmp_path / "runs" / "clipreid")])
    out = str(tmp_path / "table")
    write_outputs(records, out)
    comparisons, paths = compare_and_report(records, out)
    html = open(paths["report.html"], encoding="utf-8").read()
    # self-contained: no file, server or network address anywhere; every picture embedded
    assert not re.search(r'(src|href)="(?!data:)', html) and "http" not in html
    n_images = html.count("<img ")
    # the queries whose APs differ, largest gap first (0.5 on queries 0 and 4, 0.25 on query 3)
    assert comparisons[0]["queries"] == [0, 4, 3]
    # chart, 2 training curves, no camera-pair arrays in these runs, 3 queries x 2 strips
    assert n_images == 1 + 2 + 3 * 2

    found, console = render(paths["report.html"], tmp_path)
    assert found["recorder"] is True
    assert found["images"] == n_images and found["broken"] == 0
    assert found["methods"] == ["bagtricks", "clipreid"]
    assert found["errors"] == [] and console == []
