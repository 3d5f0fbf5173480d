"""Seeds in separate processes, resumable: tiny bag-of-tricks runs on the synthetic dataset."""

import json
import os

import numpy as np
import yaml

from clipreid_plugin.comparison import run_benchmark, table_csv
from clipreid_plugin.comparison.runner import MethodSpec
from clipreid_plugin.evaluation.results import load_per_query, per_query_file

from test_benchmark_tool import BAGTRICKS, TINY

OPTS = [item for key, value in zip(TINY[::2], TINY[1::2]) if not key.startswith(("CLIPREID.", "TEST.RERANK."))
        for item in (key, value)]


def test_seeds_run_in_worker_processes_and_finished_seeds_are_never_rerun(tmp_path):
    out = tmp_path / "bench"
    opts = OPTS + ["DATASETS.ROOT_DIR", str(tmp_path / "data")]
    method = MethodSpec("r18", BAGTRICKS)
    [row] = run_benchmark([method], str(out), opts, seeds=[3, 4], jobs=2, measure=False)

    assert row["status"] == "ok" and row["seeds"] == [3, 4] and len(row["runs"]) == 2
    folders = [out / "r18" / "SyntheticReID" / f"seed{s}" for s in (3, 4)]
    per_query = []
    for seed, folder in zip((3, 4), folders):
        with open(folder / "config.yaml") as f:
            assert yaml.safe_load(f)["SOLVER"]["SEED"] == seed
        pq = load_per_query(per_query_file(str(folder), "SyntheticReID"))
        assert pq["topk_indices"].shape[1] == 10 and "ap_by_gallery_camera" in pq  # the benchmark's defaults
        per_query.append(pq)
        record = json.load(open(folder / "benchmark_record.json"))
        assert record["seed"] == seed and record["camera_pairs"]["SyntheticReID"]["query_cameras"]
    # the seed changed the run (initialisation, sampling): other weights, other rankings
    assert not np.array_equal(per_query[0]["topk_indices"], per_query[1]["topk_indices"])
    maps = [r["results"]["SyntheticReID"]["mAP"] for r in row["runs"]]
    assert row["results"]["SyntheticReID"]["mAP"] == np.mean(maps)
    assert row["spread"]["results"]["SyntheticReID"]["mAP"]["std"] == np.std(maps, ddof=1)
    header, values = table_csv([row]).splitlines()
    cells = dict(zip(header.split(","), values.split(",")))
    assert cells["seeds"] == "2" and float(cells["mAP_std"]) == np.std(maps, ddof=1)

    # a second benchmark reads the finished seeds back: nothing is rerun
    stamps = [os.path.getmtime(f / "results.json") for f in folders]
    [again] = run_benchmark([method], str(out), opts, seeds=[3, 4], measure=False)
    assert [os.path.getmtime(f / "results.json") for f in folders] == stamps
    assert again["results"] == row["results"]

    # a seed killed after training, before its results: the run is continued (final evaluation
    # redone from the checkpoint), not started again
    os.remove(folders[1] / "results.json")
    os.remove(folders[1] / "benchmark_record.json")
    checkpoint = os.path.getmtime(folders[1] / "model_final.pth")
    [resumed] = run_benchmark([method], str(out), opts, seeds=[3, 4], measure=False)
    assert resumed["status"] == "ok" and os.path.isfile(folders[1] / "results.json")
    assert os.path.getmtime(folders[1] / "model_final.pth") == checkpoint
    assert resumed["runs"][1]["results"]["SyntheticReID"]["mAP"] == maps[1]
