"""benchmarks/train_throughput.py times the fast-reid backbones (forward + backward) at tiny sizes."""

import importlib.util
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_backbone_rows_give_rates_and_ratios(tmp_path):
    spec = importlib.util.spec_from_file_location("train_throughput", os.path.join(REPO, "benchmarks",
                                                                                    "train_throughput.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert {"r50", "r50-ibn", "r50-nl", "r50-ibn-nl", "r101-ibn", "s50"} <= set(bench.BACKBONES)
    out = tmp_path / "rows.json"
    status = bench.main(["--tiny", "--device", "cpu", "--models", "", "--backbones", "r50,s50", "--steps", "1",
                         "--warmup", "0", "--compile-mode", "", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert status == 0 and [(r["model"], r["part"]) for r in rows] == [("r50", "fwd+bwd"), ("s50", "fwd+bwd")]
    for r in rows:
        assert r["reference_style"] > 0 and r["ours"] > 0
        assert abs(r["ratio"] - r["ours"] / r["reference_style"]) < 1e-9
    assert rows[0]["ours_vs_r50"] == 1.0 and abs(rows[1]["ours_vs_r50"] - rows[1]["ours"] / rows[0]["ours"]) < 1e-9
