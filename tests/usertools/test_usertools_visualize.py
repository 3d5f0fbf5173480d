"""Rank strips and training curves (clipreid_plugin.usertools.visualize, tools/visualize_ranks.py, tools/plot_curves.py)."""

import json

import numpy as np
import pytest
from PIL import Image

from clipreid_plugin.evaluation import save_ranking_npz
from clipreid_plugin.usertools.visualize import (MATCH_COLOUR, MISMATCH_COLOUR, QUERY_COLOUR, SERIES_COLOURS, StripLayout,
                                             load_ranking, plot_training_curves, query_scores, read_metrics,
                                             visualize_ranking)

from test_usertools_extract import load_tool

# small geometry, so expected sizes are easy to compute by hand
LAYOUT = dict(thumb_height=32, thumb_width=16, border=3, gap=4, label_height=12)
CELL_W, CELL_H = 16 + 2 * 3, 32 + 2 * 3 + 12


def gallery_colour(i):
    return (10 * i, 255 - 10 * i, 100)


@pytest.fixture()
def ranking_file(tmp_path):
    """6 gallery images (solid colours), 3 queries with hand-made top-3 lists.

    gallery pids: [1, 2, 1, 3, 2, 1], camids all 1; query camids 0 (no junk).
    q0 (pid 1): top [0, 2, 5] -> all correct; q1 (pid 2): top [0, 3, 2] -> none; q2 (pid 3): [1, 3, 4] -> 2nd.
    """
    g_paths, q_paths = [], []
    for i in range(6):
        p = tmp_path / f"g{i}.png"
        Image.new("RGB", (20, 40), gallery_colour(i)).save(p)
        g_paths.append(str(p))
    for i in range(3):
        p = tmp_path / f"q{i}.png"
        Image.new("RGB", (20, 40), (0, 0, 0)).save(p)
        q_paths.append(str(p))
    path = tmp_path / "Synthetic_results.npz"
    save_ranking_npz(str(path), np.zeros((3, 4)), np.zeros((6, 4)), [1, 2, 3], [1, 2, 1, 3, 2, 1], [0, 0, 0],
                     [1] * 6, q_paths, g_paths, np.array([[0, 2, 5], [0, 3, 2], [1, 3, 4]]),
                     np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]], np.float32))
    return path


def test_query_scores_are_ap_within_topk(ranking_file):
    scores = query_scores(load_ranking(str(ranking_file)))
    # q0: 3 matches, hits at 1,2,3 -> 1; q1: none -> 0; q2: 1 match, hit at rank 2 -> (1/2)/1
    np.testing.assert_allclose(scores, [1.0, 0.0, 0.5])


def test_rank_strip_png_size_borders_and_thumbnails(ranking_file, tmp_path):
    out = tmp_path / "strip.png"
    rows = visualize_ranking(str(ranking_file), str(out), num_queries=2, topk=3, layout=StripLayout(**LAYOUT))
    assert rows == [0, 1]
    with Image.open(out) as im:
        assert im.format == "PNG"
        img = im.convert("RGB")
    gap, k, r = 4, 3, 2
    assert img.size == ((k + 1) * CELL_W + (k + 4) * gap, r * CELL_H + (r + 1) * gap)

    def origin(row, col):  # documented geometry: query column set apart by two extra gaps
        return gap + col * (CELL_W + gap) + (2 * gap if col else 0), gap + row * (CELL_H + gap)

    x, y = origin(0, 0)
    assert img.getpixel((x + 1, y + 1)) == QUERY_COLOUR
    # row 0: gallery 0 (pid 1 = query pid) is a correct match -> green border; thumbnail shows its colour
    x, y = origin(0, 1)
    assert img.getpixel((x + 1, y + 1)) == MATCH_COLOUR
    assert img.getpixel((x + 3 + 8, y + 3 + 16)) == gallery_colour(0)
    # row 1: gallery 3 (pid 3 != 2) at rank 2 -> red border, gallery 3's colour inside
    x, y = origin(1, 2)
    assert img.getpixel((x + 1, y + 1)) == MISMATCH_COLOUR
    assert img.getpixel((x + 3 + 8, y + 3 + 16)) == gallery_colour(3)
    # the distance label under a thumbnail puts dark text pixels in the label band
    band = np.asarray(img)[y + CELL_H - 12:y + CELL_H, x:x + CELL_W]
    assert (band.sum(axis=2) < 200).any()


def test_worst_and_best_orders(ranking_file, tmp_path):
    assert visualize_ranking(str(ranking_file), str(tmp_path / "w.png"), 3, 3, order="worst") == [1, 2, 0]
    assert visualize_ranking(str(ranking_file), str(tmp_path / "b.png"), 2, 3, order="best") == [0, 2]


def test_visualize_ranks_command_line(ranking_file, tmp_path):
    out = tmp_path / "cli.png"
    load_tool("visualize_ranks").main(["--results", str(ranking_file), "--output", str(out), "--queries", "2",
                                       "--topk", "2", "--thumb-size", "32", "16"])
    with Image.open(out) as im:
        # default border 4, gap 6, label 16 around 32x16 thumbnails: cells 24 x 56; 1 row, k = 2
        assert im.size == (3 * 24 + 6 * 6, 56 + 2 * 6)
    with pytest.raises(ValueError, match="out of range: the file has 3 queries"):
        visualize_ranking(str(ranking_file), str(tmp_path / "x.png"), query_indices=[7])


def test_missing_results_or_images_explain_what_to_do(ranking_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="TEST.SAVE_RESULTS True"):
        load_ranking(str(tmp_path / "none.npz"))
    (tmp_path / "g0.png").unlink()
    with pytest.raises(FileNotFoundError, match="g0.png"):
        visualize_ranking(str(ranking_file), str(tmp_path / "x.png"), 1, 3)


def write_metrics(path):
    """100 iterations: loss falls 5 -> 1, LR warms up linearly, two evaluations."""
    with open(path, "w") as f:
        for it in range(100):
            rec = {"iteration": it, "epoch": it // 10, "loss_cls": 5 - 4 * it / 99, "loss_triplet": 0.5,
                   "total_loss": 5.5 - 4 * it / 99, "lr": 1e-4 * (1 + it), "time": 0.1}
            f.write(json.dumps(rec) + "\n")
            if it in (49, 99):
                f.write(json.dumps({"iteration": it, "epoch": it // 10, "Synthetic/mAP": 20.0 + it / 2,
                                    "Synthetic/Rank-1": 40.0, "Synthetic/num_valid_query": 30}) + "\n")
        f.write("\n")


def colour_rows(arr, colour, x_lo, x_hi):
    ys, xs = np.nonzero((arr[:, x_lo:x_hi] == colour).all(axis=2))
    return ys


def test_training_curves_png(tmp_path):
    write_metrics(tmp_path / "metrics.json")
    out = tmp_path / "curves.png"
    titles = plot_training_curves(str(tmp_path / "metrics.json"), str(out), panel_size=(400, 200))
    # one dataset: its name moves from the series names to the title
    assert titles == ["training losses", "learning rate", "evaluation (%): Synthetic"]
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (400, 3 * 200)
        arr = np.asarray(im.convert("RGB"))
    # plot areas (documented): x in [64, 384], y in [28, 170] inside each panel
    losses, lr = arr[28:170], arr[200 + 28:200 + 170]
    left, right = (64, 64 + 100), (384 - 100, 384)
    c0 = SERIES_COLOURS[0]  # first series of a panel: loss_cls / lr
    # loss falls: its line is high (small y) on the left, low on the right
    assert np.median(colour_rows(losses, c0, *left)) < np.median(colour_rows(losses, c0, *right)) - 50
    # LR rises: the opposite
    assert np.median(colour_rows(lr, c0, *left)) > np.median(colour_rows(lr, c0, *right)) + 50
    # constant loss_triplet (second colour) is a flat line
    ys = colour_rows(losses, SERIES_COLOURS[1], 64, 384)
    assert len(ys) > 100 and ys.max() - ys.min() <= 6
    # evaluation panel: mAP and Rank-1 drawn (markers), counts (num_*) left out
    ev = arr[400 + 28:400 + 170, 64:384]
    assert (ev == SERIES_COLOURS[0]).all(axis=2).any() and (ev == SERIES_COLOURS[1]).all(axis=2).any()
    assert not (ev == SERIES_COLOURS[2]).all(axis=2).any()


def test_plot_curves_command_line_and_bad_lines(tmp_path):
    write_metrics(tmp_path / "metrics.json")
    load_tool("plot_curves").main(["--metrics", str(tmp_path / "metrics.json"), "--output", str(tmp_path / "c.png")])
    with Image.open(tmp_path / "c.png") as im:
        assert im.size == (720, 3 * 240)
    bad = tmp_path / "bad.json"
    bad.write_text('{"iteration": 0, "lr": 1}\n{"iteration": 1, "lr": \n')
    with pytest.raises(ValueError, match=r"bad.json:2: not valid JSON"):
        read_metrics(str(bad))
    (tmp_path / "nothing.json").write_text('{"iteration": 0, "time": 1.0}\n')
    with pytest.raises(ValueError, match="No plottable scalar"):
        plot_training_curves(str(tmp_path / "nothing.json"), str(tmp_path / "n.png"))
