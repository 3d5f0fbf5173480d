"""Every write of a user tool ends in one line (issue 21): a destination that cannot be written is
found before the work; a disk that fills up during the write is named with the user's path
(never a .tmp file) and the cause. Through the tools' command lines (in-process)."""

import json

import numpy as np
import pytest
from PIL import Image

from clipreid_plugin.usertools import save_features

from disk_full import full_disk
from tool_cli import load_tool, run_cli


@pytest.fixture
def model_args(checkpoint, tmp_path):
    cfg, weights = checkpoint
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(cfg.dump())
    return ["--config-file", cfg_file, "--weights", weights]


def one_error_line(capsys):
    """The error line of a tool that failed (the second line is the debug hint)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("error: ") and ".tmp" not in err[0], err
    return err[0][len("error: "):]


@pytest.fixture
def never_work(monkeypatch):
    """Fail the test if a tool starts the work (embedding images) before checking its output."""
    def embed(*args, **kwargs):
        raise AssertionError("the tool did the work before checking that it can write the result")
    monkeypatch.setattr("clipreid_plugin.usertools.extract.FeatureExtractor.embed", embed)


def test_extract_checks_its_output_before_the_work(model_args, image_folder, tmp_path, capsys, monkeypatch,
                                                   never_work):
    (tmp_path / "a_file").write_text("x")
    bad = tmp_path / "a_file" / "f.npz"
    assert run_cli("extract", model_args + ["--input", image_folder, "--output", bad, "--num-workers", 0]) == 2
    assert one_error_line(capsys) == f"Could not write {bad}: Not a directory."
    full_disk(monkeypatch)
    out = tmp_path / "f.npz"
    assert run_cli("extract", model_args + ["--input", image_folder, "--output", out, "--num-workers", 0]) == 2
    assert one_error_line(capsys) == f"Could not write {out}: No space left on device."


def test_extract_on_a_disk_that_fills_up_during_the_write(model_args, image_folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "f.npz"
    full_disk(monkeypatch, after_files=1, only="f.npz")  # the check's probe fits, the features do not
    assert run_cli("extract", model_args + ["--input", image_folder, "--output", out, "--num-workers", 0]) == 2
    assert one_error_line(capsys) == f"Could not write {out}: No space left on device."
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_search_output_and_strip(model_args, image_folder, tmp_path, capsys, monkeypatch, never_work):
    gallery = tmp_path / "g.npz"
    save_features(str(gallery), np.eye(5, 8, dtype=np.float32), [str(p) for p in sorted(image_folder.rglob("*.png"))]
                  + ["x.jpg"] * 3)
    query = str(next(image_folder.rglob("a.png")))
    for flag, name in (("--output", "ranks.json"), ("--strip", "ranks.png")):
        full_disk(monkeypatch, only=name)
        out = tmp_path / name
        assert run_cli("search", model_args + ["--gallery", gallery, "--query", query, flag, out]) == 2
        assert one_error_line(capsys) == f"Could not write {out}: No space left on device."
        monkeypatch.undo()


def test_search_of_a_disk_filling_up_after_the_check(tmp_path, capsys, monkeypatch):
    feats = tmp_path / "f.npz"
    save_features(str(feats), np.eye(3, 4, dtype=np.float32), ["a.jpg", "b.jpg", "c.jpg"])
    out = tmp_path / "ranks.json"
    full_disk(monkeypatch, after_files=1, only="ranks.json")
    assert run_cli("search", ["--gallery", feats, "--query-feats", feats, "--output", out]) == 2
    assert one_error_line(capsys) == f"Could not write {out}: No space left on device."


def test_search_of_an_empty_gallery_file_is_one_line(tmp_path, capsys):
    empty, query = tmp_path / "empty.npz", tmp_path / "q.npz"
    save_features(str(empty), np.zeros((0, 4), dtype=np.float32), [])
    save_features(str(query), np.ones((1, 4), dtype=np.float32), ["q.jpg"])
    assert run_cli("search", ["--gallery", empty, "--query-feats", query]) == 2
    line = one_error_line(capsys)
    assert line == (f"Feature file {empty} holds no features (0 images): extract it again from images with "
                    f"tools/extract.py.")


def test_export_onnx_checks_and_writes_atomically(model_args, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnx", reason="onnx not installed (pip install 'clipreid_plugin[onnx]')")
    out = tmp_path / "m.onnx"
    full_disk(monkeypatch, only="m.onnx")
    assert run_cli("export_onnx", model_args + ["--output", out, "--no-check"]) == 2
    assert one_error_line(capsys) == f"Could not write {out}: No space left on device."
    monkeypatch.undo()
    full_disk(monkeypatch, after_files=1, only="m.onnx")
    assert run_cli("export_onnx", model_args + ["--output", out, "--no-check"]) == 2
    assert one_error_line(capsys) == f"Could not write {out}: No space left on device."
    monkeypatch.undo()
    assert run_cli("export_onnx", model_args + ["--output", out, "--no-check"]) == 0 and out.stat().st_size > 1000


def test_plot_curves_checks_before_and_writes_atomically(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib", reason="matplotlib not installed (pip install 'clipreid_plugin[plots]')")
    metrics = tmp_path / "metrics.json"
    metrics.write_text("".join(json.dumps({"iteration": i, "epoch": 0, "loss_cls": 1.0 / (1 + i), "lr": 0.1}) + "\n"
                               for i in range(5)))
    out = tmp_path / "curves.png"
    drawn = []
    real = load_tool("plot_curves").plot_training_curves
    monkeypatch.setattr("clipreid_plugin.usertools.training_curves.plot_training_curves",
                        lambda *a, **k: drawn.append(1) or real(*a, **k))
    full_disk(monkeypatch, only="curves.png")
    assert run_cli("plot_curves", ["--metrics", metrics, "--output", out]) == 2
    assert one_error_line(capsys) == f"Could not write {out}: No space left on device." and not drawn
    monkeypatch.undo()
    full_disk(monkeypatch, after_files=1, only="curves.png")
    assert run_cli("plot_curves", ["--metrics", metrics, "--output", out]) == 2
    assert one_error_line(capsys) == f"Could not write {out}: No space left on device."
    monkeypatch.undo()
    assert run_cli("plot_curves", ["--metrics", metrics, "--output", out]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG"
