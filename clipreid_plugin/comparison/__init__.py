"""Comparing methods: run configs, record their results and costs, tabulate and chart them.

* :mod:`.records` — the per-run record (``OUTPUT_DIR/benchmark_record.json``), reading finished runs;
* :mod:`.model_stats` — parameters, fvcore GFLOPs per image, inference images/s;
* :mod:`.runner` — train + evaluate one config in-process and write its record;
* :mod:`.tables` — one row per (method, dataset): terminal / markdown / CSV tables and a PNG chart;
* :mod:`.seeds` — one row from several seeds (means, std, min-max);
* :mod:`.parallel` — runs spread over processes (one per GPU, or CPU processes);
* :mod:`.paired` — paired identity-bootstrap intervals of per-query differences;
* :mod:`.comparisons` — method-vs-method comparisons of rows, camera-pair breakdown;
* :mod:`.pair_tables` — comparison, transfer-matrix and camera-pair tables;
* :mod:`.report` — ``report.html``, one self-contained page.

``tools/benchmark.py`` and ``tools/demo.py`` are thin command lines over these modules.
"""

from .records import RECORD_FILE, collect_run, dataset_rows, failed_record, missing_record, read_record, write_record
from .runner import MethodSpec, parse_method, run_benchmark, run_method
from .report import compare_and_report, write_report
from .tables import chart_figure, draw_chart, table_columns, table_csv, table_markdown, table_text, write_outputs

__all__ = ["RECORD_FILE", "collect_run", "dataset_rows", "failed_record", "missing_record", "read_record",
           "write_record", "MethodSpec", "parse_method", "run_benchmark", "run_method", "table_columns", "table_text",
           "table_markdown", "table_csv", "chart_figure", "draw_chart", "write_outputs", "compare_and_report",
           "write_report"]
