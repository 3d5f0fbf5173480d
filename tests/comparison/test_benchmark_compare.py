"""tools/benchmark.py's comparisons on hand-made finished runs: seeds aggregated, paired
differences, bad input, train time from the log, the transfer matrix and cross-domain plans."""

import csv
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from clipreid_plugin.comparison import collect_run
from clipreid_plugin.comparison.pair_tables import transfer_csv, transfer_table
from clipreid_plugin.comparison.records import new_record
from clipreid_plugin.comparison.runner import MethodSpec, plan_runs
from clipreid_plugin.comparison.seeds import parse_seeds
from clipreid_plugin.utils.errors import InvalidInputError

from fake_runs import DATASET, make_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("benchmark_tool", os.path.join(REPO, "tools", "benchmark.py"))
benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark)

# per-query AP of each seed (6 queries; the last has no match in the gallery)
A_AP = [[0.5, 0.5, 1.0, 0.25, 1.0, 0.0], [0.5, 1.0, 1.0, 0.25, 0.5, 0.0]]
B_AP = [[1.0, 0.5, 1.0, 0.5, 1.0, 0.0], [1.0, 0.5, 1.0, 1.0, 1.0, 0.0]]


def _first(ap):  # first-match rank consistent with the AP of a single match
    return [int(round(1 / a)) if a > 0 else 0 for a in ap]


def _runs(root):
    for method, aps in (("A", A_AP), ("B", B_AP)):
        for seed, ap in enumerate(aps, 1):
            make_run(os.path.join(root, method, f"seed{seed}"), method, ap, _first(ap), seed=seed)


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_seed_rows_and_paired_differences_by_hand(tmp_path):
    _runs(tmp_path / "runs")
    out = tmp_path / "table"
    args = ["--collect", f"A={tmp_path / 'runs' / 'A'}", f"B={tmp_path / 'runs' / 'B'}", "--output-dir", str(out)]
    assert benchmark.main(args) == 0

    rows = _csv(out / "benchmark.csv")
    assert [(r["method"], r["seeds"], r["status"]) for r in rows] == [("A", "2", "ok"), ("B", "2", "ok")]
    seed_maps = [np.mean(ap[:5]) * 100 for ap in A_AP]  # the record's mAP is the mean over valid queries
    assert float(rows[0]["mAP"]) == pytest.approx(np.mean(seed_maps))
    assert float(rows[0]["mAP_std"]) == pytest.approx(np.std(seed_maps, ddof=1))
    assert (float(rows[0]["mAP_min"]), float(rows[0]["mAP_max"])) == pytest.approx((min(seed_maps), max(seed_maps)))
    assert "±" in (out / "benchmark.md").read_text()

    comp = _csv(out / "comparison.csv")
    assert len(comp) == 1 and (comp[0]["a"], comp[0]["b"], comp[0]["dataset"]) == ("A", "B", DATASET)
    a_mean = np.mean(A_AP, axis=0)[:5]  # seed-averaged per query, valid queries only
    b_mean = np.mean(B_AP, axis=0)[:5]
    assert float(comp[0]["mAP_diff"]) == pytest.approx(np.mean(b_mean - a_mean) * 100)
    r1 = lambda aps: np.mean([[a == 1.0 for a in ap[:5]] for ap in aps], axis=0)  # noqa: E731
    assert float(comp[0]["Rank-1_diff"]) == pytest.approx(np.mean(r1(B_AP) - r1(A_AP)) * 100)
    assert float(comp[0]["mAP_low"]) <= float(comp[0]["mAP_diff"]) <= float(comp[0]["mAP_high"])
    # seed means A (.5, .75, 1, .25, .75), B (1, .5, 1, .75, 1): B higher on 3 queries, A on 1, 1 tie
    assert (float(comp[0]["b_wins"]), float(comp[0]["a_wins"]), float(comp[0]["ties"])) == pytest.approx(
        (3 / 5, 1 / 5, 1 / 5))
    assert int(comp[0]["seeds_a"]) == 2 and int(comp[0]["num_identities"]) == 3
    html = (out / "report.html").read_text()
    assert html.count('<tr data-method=') == 2 and "B - A" in html and "data:image/png;base64," in html


def test_compare_names_the_pair_and_unknown_methods_fail(tmp_path):
    _runs(tmp_path / "runs")
    base = ["--collect", f"A={tmp_path / 'runs' / 'A'}", f"B={tmp_path / 'runs' / 'B'}", "--output-dir",
            str(tmp_path / "t")]
    assert benchmark.main(base + ["--compare", "B", "A"]) == 0
    comp = _csv(tmp_path / "t" / "comparison.csv")
    assert (comp[0]["a"], comp[0]["b"]) == ("B", "A") and float(comp[0]["mAP_diff"]) < 0
    with pytest.raises(InvalidInputError, match="no method named 'C'"):
        benchmark.main(base + ["--compare", "A", "C"])


def test_other_query_sets_are_a_one_line_error_naming_both_runs(tmp_path):
    make_run(tmp_path / "a", "a", A_AP[0], _first(A_AP[0]))
    make_run(tmp_path / "b", "b", B_AP[0], _first(B_AP[0]), query_paths=[f"/elsewhere/{i}.jpg" for i in range(6)])
    p = subprocess.run([sys.executable, os.path.join(REPO, "tools", "benchmark.py"), "--collect", str(tmp_path / "a"),
                        str(tmp_path / "b"), "--compare", "a", "b", "--output-dir", str(tmp_path / "t")],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if "Cannot compare" in line]
    assert len(errors) == 1 and f"{tmp_path / 'a'} with {tmp_path / 'b'}" in errors[0]
    assert "different query sets" in errors[0]


def test_a_run_without_per_query_results_says_how_to_reevaluate(tmp_path, caplog):
    make_run(tmp_path / "new", "new", A_AP[0], _first(A_AP[0]))
    make_run(tmp_path / "old", "old", B_AP[0], _first(B_AP[0]), per_query=False)
    folders = ["--collect", str(tmp_path / "new"), str(tmp_path / "old"), "--output-dir", str(tmp_path / "t")]
    with pytest.raises(InvalidInputError) as e:
        benchmark.main(folders + ["--compare", "new", "old"])
    msg = str(e.value)
    assert str(tmp_path / "old") in msg and "--eval-only --resume" in msg and "tools/train_net.py" in msg
    assert f"--config-file {tmp_path / 'old' / 'config.yaml'}" in msg and "\n" not in msg
    # the default comparisons leave it out with that warning: the table is still written
    assert benchmark.main(folders) == 0
    assert (tmp_path / "t" / "benchmark.csv").is_file() and not (tmp_path / "t" / "comparison.csv").exists()
    assert any("--eval-only --resume" in r.getMessage() for r in caplog.records)


def test_a_later_eval_only_folder_provides_the_per_query_results(tmp_path):
    make_run(tmp_path / "new", "new", A_AP[0], _first(A_AP[0]))
    make_run(tmp_path / "old", "old", B_AP[0], _first(B_AP[0]), per_query=False)
    make_run(tmp_path / "old" / "eval_model_final", "old", B_AP[0], _first(B_AP[0]),
             image_dir=str(tmp_path / "images"))
    assert benchmark.main(["--collect", str(tmp_path / "new"), str(tmp_path / "old"), "--compare", "new", "old",
                           "--output-dir", str(tmp_path / "t")]) == 0
    assert float(_csv(tmp_path / "t" / "comparison.csv")[0]["mAP_diff"]) == pytest.approx(
        np.mean(np.subtract(B_AP[0], A_AP[0])[:5]) * 100)


def test_collect_reads_the_training_time_from_the_log(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text('{"Market1501": {"mAP": 50.0, "Rank-1": 60.0}}')
    (run / "log.txt").write_text("[x] Starting\n[x engine.hooks]: Training took 75.5 s (70.0 s in optimisation "
                                 "steps).\n[x] resumed\n[x engine.hooks]: Training took 14.5 s (9.0 s in optimisation "
                                 "steps).\n")
    rec = collect_run(str(run))
    assert rec["train_s"] == 90.0  # an interrupted run resumed once: both sessions
    (run / "log.txt").write_text("no such line\n")
    assert collect_run(str(run))["train_s"] is None


def test_transfer_matrix_has_one_row_per_method_and_a_column_per_train_test_pair():
    recs = []
    for method, base in (("r50", 10.0), ("clip", 20.0)):
        for train in ("Market1501", "DukeMTMC"):
            rec = new_record(method, "x.yml", "ResNet-50", ["Market1501", "DukeMTMC"], f"out/{method}/{train}")
            rec["train_datasets"] = [train]
            rec["results"] = {t: {"mAP": base + i + (0 if train == t else 30), "Rank-1": base + i + 40}
                              for i, t in enumerate(("Market1501", "DukeMTMC"))}
            recs.append(rec)
    text = transfer_table(recs).splitlines()
    assert text[0].split()[-4:] == ["Market1501->Market1501", "Market1501->DukeMTMC", "DukeMTMC->Market1501",
                                    "DukeMTMC->DukeMTMC"]
    assert len(text) == 2 + 2 and text[2].split()[0] == "r50" and text[3].split()[0] == "clip"
    rows = list(csv.DictReader(transfer_csv(recs).splitlines()))
    assert float(rows[1]["Market1501->DukeMTMC_mAP"]) == 51.0 and float(rows[1]["DukeMTMC->DukeMTMC_mAP"]) == 21.0
    # same-domain rows only: no transfer matrix
    single = new_record("a", "a.yml", "R", ["Market1501"], "out/a")
    single.update(train_datasets=["Market1501"], results={"Market1501": {"mAP": 1.0}})
    assert transfer_table([single]) is None


def test_cross_domain_and_seed_plans():
    cfg = os.path.join(REPO, "configs", "SyntheticReID", "bagtricks_R18.yml")
    plans, failed = plan_runs([MethodSpec("r18", cfg)], "out", (), seeds=[1, 2],
                              train_datasets=["Market1501", "DukeMTMC"], test_datasets=["DukeMTMC", "Market1501"])
    assert not failed
    assert [(p.train, p.tests, p.seed, p.row, p.output_dir) for p in plans] == [
        (["Market1501"], ["DukeMTMC", "Market1501"], 1, 0, os.path.join("out", "r18", "Market1501_to_DukeMTMC+Market1501", "seed1")),
        (["Market1501"], ["DukeMTMC", "Market1501"], 2, 0, os.path.join("out", "r18", "Market1501_to_DukeMTMC+Market1501", "seed2")),
        (["DukeMTMC"], ["DukeMTMC", "Market1501"], 1, 1, os.path.join("out", "r18", "DukeMTMC_to_DukeMTMC+Market1501", "seed1")),
        (["DukeMTMC"], ["DukeMTMC", "Market1501"], 2, 1, os.path.join("out", "r18", "DukeMTMC_to_DukeMTMC+Market1501", "seed2"))]
    assert parse_seeds([3]) == [1, 2, 3] and parse_seeds([7, 3, 7]) == [7, 3] and parse_seeds(None) is None
    with pytest.raises(InvalidInputError, match="--seeds 0"):
        parse_seeds([0])
