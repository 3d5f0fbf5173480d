"""Benchmark records, tables, chart and model statistics on hand-made inputs."""

import csv
import io
import json
import sys
import warnings

import pytest
import torch
from PIL import Image
from torch import nn

from clipreid_plugin.comparison import (chart_figure, collect_run, draw_chart, failed_record, missing_record, table_csv,
                                       table_markdown, table_text, write_outputs, write_record)
from clipreid_plugin.comparison.model_stats import count_parameters, sdpa_flop_jit
from clipreid_plugin.comparison.records import new_record
from clipreid_plugin.comparison.runner import MethodSpec, run_method
from clipreid_plugin.utils.errors import MissingDependencyError


def _ok(method, ds, mAP, r1, rerank=None):
    rec = new_record(method, f"configs/{method}.yml", "ResNet-50", [ds], f"out/{method}")
    rec["results"] = {ds: {"Rank-1": r1, "Rank-5": 90.0, "Rank-10": 95.0, "mAP": mAP, "mINP": 30.0}}
    if rerank:
        rec["rerank"] = {ds: {"Rank-1": rerank[1], "mAP": rerank[0]}}
    rec.update(params_m=23.51, gflops=6.07, train_s=90.0, images_per_s=512.3)
    return rec


def test_table_keeps_failed_and_missing_rows_with_empty_cells():
    recs = [_ok("a", "Market1501", 85.94, 94.46), failed_record("b", "b.yml", "ViT-B/16", ["VeRi"], "out/b", "boom\nx"),
            missing_record("c", "c.yml", "CLIP RN50", ["VeRi"], "out/c")]
    text = table_text(recs)
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["method", "backbone", "dataset", "status", "mAP"]
    assert "(RR)" not in text and "untrained" not in text  # optional groups absent
    assert len(lines) == 2 + 3
    assert "85.9" in lines[2] and "94.5" in lines[2] and "23.51" in lines[2] and "1.5" in lines[2]  # 90 s = 1.5 min
    assert "failed: boom" in lines[3] and "missing" in lines[4] and lines[4].count(" - ") >= 5
    md = table_markdown(recs).splitlines()
    assert md[0].startswith("| method") and set(md[1]) <= set("|-: ") and len(md) == 5
    rows = list(csv.DictReader(io.StringIO(table_csv(recs))))
    assert [r["status"] for r in rows] == ["ok", "failed: boom", "missing"]
    assert float(rows[0]["mAP"]) == 85.94 and float(rows[0]["train_min"]) == 1.5 and rows[1]["mAP"] == ""


def test_rerank_columns_appear_when_a_run_has_them():
    recs = [_ok("a", "Market1501", 80.0, 90.0, rerank=(88.0, 92.0)), _ok("b", "Market1501", 70.0, 85.0)]
    rows = list(csv.DictReader(io.StringIO(table_csv(recs))))
    assert float(rows[0]["mAP_rerank"]) == 88.0 and rows[1]["mAP_rerank"] == ""
    assert "mAP (RR)" in table_text(recs)


def test_chart_bars_have_the_metric_heights_untrained_included(tmp_path):
    trained = _ok("a", "Market1501", 50.0, 100.0)
    trained["untrained"] = {"Market1501": {"mAP": 4.0, "Rank-1": 8.0}}
    recs = [trained, missing_record("c", "c.yml", "x", ["VeRi"], "out/c")]
    fig = chart_figure(recs)
    ax = fig.axes[0]
    heights = {c.get_label(): [bar.get_height() for bar in c] for c in ax.containers}
    # one bar per row and series; the missing row keeps its place with zero-height bars
    assert heights == {"mAP untrained": [4.0, 0.0], "mAP": [50.0, 0.0], "Rank-1 untrained": [8.0, 0.0],
                       "Rank-1": [100.0, 0.0]}
    assert "missing" in [t.get_text() for t in ax.texts] and ax.get_ylim() == (0, 100)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "a\nMarket1501\nResNet-50" and labels[1] == "c\nVeRi\nx"
    # without untrained results there are no untrained bars
    assert [c.get_label() for c in chart_figure([_ok("a", "M", 1.0, 2.0)]).axes[0].containers] == ["mAP", "Rank-1"]
    path = tmp_path / "chart.png"
    draw_chart(recs, str(path))
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 200


def test_without_matplotlib_the_tables_are_written_and_the_chart_skipped(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"clipreid_plugin\[plots\]"):
        draw_chart([_ok("a", "M", 1.0, 2.0)], str(tmp_path / "x.png"))
    paths = write_outputs([_ok("a", "M", 1.0, 2.0)], str(tmp_path / "t"))
    assert sorted(paths) == ["csv", "md", "txt"] and not (tmp_path / "t" / "benchmark.png").exists()
    assert "benchmark.png" in caplog.text and "matplotlib" in caplog.text


def plain_run(folder, results, run_info=None, tests=("Market1501",)):
    """The files a tools/train_net.py run leaves (config.yaml, results.json, run_info.json)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("DATASETS:\n  NAMES:\n  - Market1501\n  TESTS:\n"
                                        + "".join(f"  - {t}\n" for t in tests)
                                        + "MODEL:\n  BACKBONE:\n    NAME: build_clip_backbone\n")
    (folder / "results.json").write_text(json.dumps(results))
    if run_info is not None:
        (folder / "run_info.json").write_text(json.dumps(run_info))
    return folder


def test_collect_any_run_folder_labels_the_backbone_built_and_names_missing_paths(tmp_path, caplog):
    bench = tmp_path / "runs" / "a" / "Market1501"
    write_record(str(bench), _ok("a", "Market1501", 80.0, 90.0))
    plain = plain_run(tmp_path / "market_clip", {"Market1501": {"mAP": 70.0, "Rank-1": 80.0}},
                      {"backbone": "CLIP ReID-Tiny-ViT", "parameters": 2_500_000, "tests": ["Market1501"]})
    old = plain_run(tmp_path / "old_run", {"Market1501": {"mAP": 60.0, "Rank-1": 65.0}})  # before run_info.json
    (tmp_path / "unfinished").mkdir()
    recs = [collect_run(str(bench)), collect_run(str(plain)), collect_run(str(old), "renamed"),
            collect_run(str(tmp_path / "unfinished")), collect_run(str(tmp_path / "nope"), "n", "n.yml", ["VeRi"])]
    assert [r["method"] for r in recs] == ["a", "market_clip", "renamed", "unfinished", "n"]
    assert [r["status"] for r in recs[:3]] == ["ok", "ok", "ok"]
    # the backbone comes from the run, never from the config's names (config.yaml says build_clip_backbone)
    assert [r["backbone"] for r in recs[:3]] == ["ResNet-50", "CLIP ReID-Tiny-ViT", "?"]
    assert recs[1]["params_m"] == 2.5 and recs[1]["gflops"] is None and recs[1]["datasets"] == ["Market1501"]
    assert recs[1]["config"] == str(plain / "config.yaml") and recs[0]["gflops"] == 6.07
    assert str(old / "run_info.json") in caplog.text  # the file looked for, named
    assert recs[3]["status"] == f"failed: no benchmark_record.json or results.json in {tmp_path / 'unfinished'} " \
                                "(unfinished or crashed run?)"
    assert recs[4]["status"] == f"missing: no folder {tmp_path / 'nope'}" and recs[4]["datasets"] == ["VeRi"]
    paths = write_outputs(recs, str(tmp_path / "tables"))
    assert sorted(paths) == ["csv", "md", "png", "txt"]
    rows = list(csv.DictReader(open(paths["csv"])))
    assert [r["backbone"] for r in rows] == ["ResNet-50", "CLIP ReID-Tiny-ViT", "?", "?", "?"]
    assert float(rows[1]["mAP"]) == 70.0 and rows[4]["status"].startswith("missing: no folder")


def test_sdpa_handle_counts_attention_matmuls():
    from fvcore.nn import FlopCountAnalysis

    e, h, length = 8, 2, 5
    mha = nn.MultiheadAttention(e, h, batch_first=True)

    class Self(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fca = FlopCountAnalysis(Self(), (torch.randn(1, length, e),))
        fca.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = fca.total()
    projections = 4 * length * e * e  # q, k, v and output projections (multiply-adds)
    attention = h * length * length * (e // h) * 2  # q k^T and attn v per head
    assert total == projections + attention


def test_count_parameters_and_backbone_names():
    from clipreid_plugin.modeling.backbones import ResNetBackbone, ViTBackbone

    assert count_parameters(nn.Linear(3, 4)) == 16
    # labels name the architecture built, from its modules (torchvision's names for its sizes)
    assert ResNetBackbone("50x_32x4d").describe() == "ResNeXt-50 32x4d"
    assert ResNetBackbone("18x").describe() == "ResNet-18"
    assert ViTBackbone((32, 32), 16, 12, 12, 768, 3072, stride=(12, 12)).describe() == "ViT-B/16 OLP"
    assert ViTBackbone((32, 32), 16, 2, 2, 16, 32, num_cameras=2).describe() == "ViT 16w/2L/16 SIE"


def test_a_failing_run_becomes_a_failed_record(tmp_path):
    cfg_file = tmp_path / "bad.yml"
    cfg_file.write_text('DATASETS:\n  NAMES: ["NoSuchData"]\n  TESTS: ["NoSuchData"]\nMODEL:\n  DEVICE: cpu\n')
    rec = run_method(MethodSpec("bad", str(cfg_file)), ["DATASETS.ROOT_DIR", str(tmp_path)], str(tmp_path / "out"))
    assert rec["status"].startswith("failed: ") and "NoSuchData" in rec["status"]
    assert json.load(open(tmp_path / "out" / "benchmark_record.json"))["status"] == rec["status"]
