"""tools/benchmark.py end to end: a classic baseline and CLIP-ReID (tiny) on the synthetic dataset."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from training_checks import assert_trained

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BAGTRICKS = os.path.join(REPO, "configs", "SyntheticReID", "bagtricks_R18.yml")
CLIPREID = os.path.join(REPO, "projects", "CLIPReID", "configs", "synthetic", "cnn_clipreid_tiny.yml")
# tiny data, 64x32 images, two epochs of the main loop (the training checks compare the first and
# the last), one of stage 1, CPU: the whole benchmark runs in about a minute
TINY = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
        "DATASETS.SYNTHETIC.IMAGES_PER_ID", "4", "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "2",
        "DATASETS.SYNTHETIC.NUM_JUNK", "1", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
        "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "INPUT.PADDING.SIZE", "2",
        "SOLVER.MAX_EPOCHS", "2", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.CHECKPOINT_PERIOD", "1",
        "SOLVER.WARMUP_EPOCHS", "0", "TEST.EVAL_PERIOD", "2", "TEST.IMS_PER_BATCH", "32", "TEST.RERANK.K1", "5", "TEST.RERANK.K2", "2",
        "CLIPREID.STAGE1.MAX_EPOCHS", "1", "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"]


def _benchmark(args, tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "benchmark.py")] + args, cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=600)


def test_benchmark_runs_two_methods_then_collects(tmp_path):
    out = tmp_path / "bench"
    shared = ["--output-dir", str(out), "DATASETS.ROOT_DIR", str(tmp_path / "data")] + TINY
    p = _benchmark(["--methods", BAGTRICKS, f"clipreid={CLIPREID}", "--rerank"] + shared, tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    with open(out / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["backbone"], r["dataset"], r["status"]) for r in rows] == [
        ("bagtricks_R18", "ResNet-18", "SyntheticReID", "ok"), ("clipreid", "CLIP ModifiedResNet 1-1-1-1 w16", "SyntheticReID", "ok")]  # ReID-Tiny-RN.json's tower
    for r in rows:
        for key in ("mAP", "Rank-1", "Rank-5", "Rank-10", "mINP", "mAP_rerank", "Rank-1_rerank"):
            assert 0.0 <= float(r[key]) <= 100.0, (key, r)
        assert float(r["Rank-1"]) <= float(r["Rank-5"]) <= float(r["Rank-10"])
        assert float(r["params_M"]) > 0 and float(r["GFLOPs_per_image"]) > 0
        assert float(r["train_min"]) > 0 and float(r["inference_images_per_s"]) > 0
    # the table's metrics are the evaluator's (results.json of each run), not recomputed
    results = json.load(open(out / "bagtricks_R18" / "SyntheticReID" / "results.json"))["SyntheticReID"]
    assert float(rows[0]["mAP"]) == results["mAP"]
    # ResNet-18 without its ImageNet classifier + BNNeck (512) + classifier (512 x 8 identities)
    assert abs(float(rows[0]["params_M"]) * 1e6 - (11689512 - 513000 + 1024 + 512 * 8)) < 1

    header = (out / "benchmark.txt").read_text().splitlines()[0].split()
    assert header[:5] == ["method", "backbone", "dataset", "status", "mAP"]
    md = (out / "benchmark.md").read_text().splitlines()
    assert md[0].startswith("| method") and "mAP (RR)" in md[0] and len(md) == 4
    img = np.asarray(Image.open(out / "benchmark.png").convert("RGB"))
    assert img.shape[0] >= 300 and img.shape[1] >= 400 and img.std() > 10  # drawn, not blank
    assert "bagtricks_R18" in p.stdout and "clipreid" in p.stdout
    for method in ("bagtricks_R18", "clipreid"):
        assert_trained(str(out / method / "SyntheticReID"), modules=["backbone"])

    # --collect rebuilds the same table from the folders; a run never made shows as missing
    (out / "benchmark.csv").unlink()
    p = _benchmark(["--methods", BAGTRICKS, f"clipreid={CLIPREID}", f"never_run={BAGTRICKS}", "--collect"] + shared,
                   tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(out / "benchmark.csv") as f:
        collected = list(csv.DictReader(f))
    never = out / "never_run" / "SyntheticReID"
    assert [r["status"] for r in collected] == ["ok", "ok", f"missing: no folder {never}"]
    assert collected[0]["mAP"] == rows[0]["mAP"] and collected[1]["GFLOPs_per_image"] == rows[1]["GFLOPs_per_image"]
    assert collected[2]["method"] == "never_run" and collected[2]["mAP"] == ""
    assert "missing" in p.stdout

    # run folders given directly (any OUTPUT_DIR), NAME=DIR names a row; labels are the built backbones
    table = tmp_path / "table"
    p = _benchmark(["--collect", str(out / "bagtricks_R18" / "SyntheticReID"),
                    f"tiny_clip={out / 'clipreid' / 'SyntheticReID'}", str(tmp_path / "nowhere"),
                    "--output-dir", str(table)], tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(table / "benchmark.csv") as f:
        direct = list(csv.DictReader(f))
    assert [(r["method"], r["backbone"], r["status"]) for r in direct] == [
        ("bagtricks_R18", "ResNet-18", "ok"), ("tiny_clip", rows[1]["backbone"], "ok"),
        ("nowhere", "?", f"missing: no folder {tmp_path / 'nowhere'}")]
    assert direct[1]["mAP"] == rows[1]["mAP"]
    p = _benchmark(["--collect", str(table), "--methods", BAGTRICKS], tmp_path)
    assert p.returncode == 2 and "not both" in p.stderr and "Traceback" not in p.stderr


def test_demo_table_and_chart_show_the_untrained_model(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # restored after the test
    spec = importlib.util.spec_from_file_location("demo_tool", os.path.join(REPO, "tools", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # for the OpenMP of a fresh `python tools/demo.py`
    out = tmp_path / "demo"
    tiny = [item for key, value in zip(TINY[::2], TINY[1::2]) if not key.startswith(("CLIPREID.", "TEST.RERANK."))
            for item in (key, value)]  # the bag-of-tricks config has no CLIP-ReID keys
    assert demo.main(["--methods", "bagtricks", "--output-dir", str(out), "DATASETS.ROOT_DIR", str(tmp_path / "data")]
                     + tiny) == 0
    with open(out / "demo_results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and 0 <= float(rows[0]["mAP_untrained"]) <= 100 and 0 <= float(rows[0]["mAP"]) <= 100
    assert_trained(str(out / "bagtricks" / "SyntheticReID"), modules=["backbone"])
    from clipreid_plugin.comparison import chart_figure, collect_run

    labels = [c.get_label() for c in chart_figure([collect_run(str(out / "bagtricks" / "SyntheticReID"))]).axes[0].containers]
    assert labels == ["mAP untrained", "mAP", "Rank-1 untrained", "Rank-1"]
    with Image.open(out / "demo_results.png") as im:
        assert im.format == "PNG"
    assert (out / "report.html").is_file()  # the demo ends by printing its path
