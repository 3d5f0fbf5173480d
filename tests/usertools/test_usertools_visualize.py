"""Rank strips and training curves (clipreid_plugin.usertools.rank_strips and .training_curves, tools/visualize_ranks.py, tools/plot_curves.py)."""

import json
import math
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clipreid_plugin.evaluation import save_ranking_npz
from clipreid_plugin.usertools.rank_strips import (LETTERBOX_COLOUR, MATCH_COLOUR, MISMATCH_COLOUR, QUERY_COLOUR,
                                                   UNKNOWN_COLOUR, StripLayout, draw_rank_strips, load_ranking,
                                                   query_scores, visualize_ranking)
from clipreid_plugin.usertools.training_curves import curves_figure, epoch_positions, plot_training_curves, read_metrics
from clipreid_plugin.utils.errors import MissingDependencyError

from tool_cli import load_tool

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


@pytest.mark.parametrize("name, content", [("results.json", b'{"SyntheticReID": {"mAP": 61.2}}\n'),
                                           ("feats.npy", None)])
def test_visualize_ranks_given_another_file_says_which_file_it_wants(name, content, tmp_path, capsys):
    """A run's results.json (the metrics) or a plain .npy: one line naming the <dataset>_results.npz it wants."""
    from clipreid_plugin.utils.cli import run_tool

    path = tmp_path / name
    if content is None:
        np.save(path, np.zeros(3))
    else:
        path.write_bytes(content)
    code = run_tool(lambda: load_tool("visualize_ranks").main(["--results", str(path), "--output",
                                                               str(tmp_path / "x.png")]))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 2, err
    assert f"{path} is not a saved ranking: --results wants the OUTPUT_DIR/<dataset>_results.npz" in err
    assert "TEST.SAVE_RESULTS True" in err and not (tmp_path / "x.png").exists()


def test_worst_and_best_orders(ranking_file, tmp_path):
    assert visualize_ranking(str(ranking_file), str(tmp_path / "w.png"), 3, 3, order="worst") == [1, 2, 0]
    assert visualize_ranking(str(ranking_file), str(tmp_path / "b.png"), 2, 3, order="best") == [0, 2]


def test_visualize_ranks_command_line(ranking_file, tmp_path):
    out = tmp_path / "cli.png"
    load_tool("visualize_ranks").main(["--results", str(ranking_file), "--output", str(out), "--queries", "2",
                                       "--topk", "2", "--thumb-height", "32", "--thumb-width", "16"])
    with Image.open(out) as im:
        # default border 4, gap 6, label 16 around 32x16 thumbnails: cells 24 x 56; 1 row, k = 2
        assert im.size == (3 * 24 + 6 * 6, 56 + 2 * 6)
    # without a width, the box takes the crops' shape: 20x40 images -> 32 x 16 boxes again
    load_tool("visualize_ranks").main(["--results", str(ranking_file), "--output", str(out), "--queries", "2",
                                       "--topk", "2", "--thumb-height", "32"])
    with Image.open(out) as im:
        assert im.size == (3 * 24 + 6 * 6, 56 + 2 * 6)
    with pytest.raises(ValueError, match="out of range: the file has 3 queries"):
        visualize_ranking(str(ranking_file), str(tmp_path / "x.png"), query_indices=[7])


def test_missing_results_or_images_explain_what_to_do(ranking_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="TEST.SAVE_RESULTS True"):
        load_ranking(str(tmp_path / "none.npz"))
    (tmp_path / "g0.png").unlink()
    with pytest.raises(FileNotFoundError, match="g0.png"):
        visualize_ranking(str(ranking_file), str(tmp_path / "x.png"), 1, 3)


def solid(path, size, colour):
    Image.new("RGB", size, colour).save(path)
    return str(path)


def test_square_vehicle_crops_get_square_boxes(tmp_path):
    """30x30 crops at thumb height 24: boxes 24 x 24 (not person-shaped 24 x 12)."""
    paths = [solid(tmp_path / f"car{i}.png", (30, 30), (40 * i, 80, 160)) for i in range(4)]
    layout = StripLayout(thumb_height=24, border=2, gap=3, label_height=10)
    img = draw_rank_strips(paths[:1], paths, [[1, 2, 3]], [[0.1, 0.2, 0.3]], layout=layout)
    cell_w, cell_h = 24 + 2 * 2, 24 + 2 * 2 + 10
    assert img.size == (4 * cell_w + 7 * 3, cell_h + 2 * 3)
    x = 3 + 1 * (cell_w + 3) + 2 * 3  # first gallery cell
    box = np.asarray(img)[3 + 2:3 + 2 + 24, x + 2:x + 2 + 24]
    assert (box == (40, 80, 160)).all()  # the whole box is the crop: no letterbox
    assert img.getpixel((x, 3)) == UNKNOWN_COLOUR  # no identities: grey border


def test_crops_keep_their_aspect_ratio_inside_a_fixed_box(tmp_path):
    """A square crop in a 16-wide x 32-high box is drawn 16 x 16, centred, letterbox above and below."""
    sq, tall = solid(tmp_path / "sq.png", (30, 30), (200, 0, 200)), solid(tmp_path / "t.png", (10, 20), (0, 90, 0))
    layout = StripLayout(thumb_height=32, thumb_width=16, border=3, gap=4, label_height=12)
    img = np.asarray(draw_rank_strips([tall], [sq], [[0]], [[0.5]], layout=layout))
    x0, y0 = 4 + (16 + 6 + 4) + 2 * 4 + 3, 4 + 3  # inside the gallery cell's border
    column = img[y0:y0 + 32, x0 + 8]
    assert (column[:8] == LETTERBOX_COLOUR).all() and (column[24:] == LETTERBOX_COLOUR).all()
    assert (column[8:24] == (200, 0, 200)).all()
    assert (img[y0 + 16, x0:x0 + 16] == (200, 0, 200)).all()  # full width
    # the 1:2 query crop fills its 1:2 box
    assert (img[4 + 3:4 + 3 + 32, 4 + 3:4 + 3 + 16] == (0, 90, 0)).all()


def test_search_strip_labels_every_image_with_its_file_name(tmp_path, monkeypatch):
    paths = [solid(tmp_path / f"id7_c{i}.png", (20, 40), (10, 20 * i, 30)) for i in range(3)]
    drawn = []
    original = ImageDraw.ImageDraw.text

    def record(self, xy, text, *args, **kwargs):
        drawn.append(text)
        return original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", record)
    layout = StripLayout(thumb_height=160, border=2, gap=2, label_height=14)  # boxes 80 wide
    img = draw_rank_strips(paths[:1], paths, [[2, 1]], [[0.25, 0.5]], layout=layout, show_names=True)
    # two label lines per cell: the name, then "query" or the distance
    assert drawn == ["id7_c0.png", "query", "id7_c2.png", "0.250", "id7_c1.png", "0.500"]
    assert img.size[1] == 160 + 2 * 2 + 2 * 14 + 2 * 2
    drawn.clear()
    narrow = StripLayout(thumb_height=24, border=1, gap=1, label_height=12)
    draw_rank_strips(paths[:1], paths, [[1]], [[0.1]], layout=narrow, show_names=True)
    # a name too wide for the 14-pixel cell: its stem, shortened in the middle with an ellipsis
    assert drawn[0] != "id7_c0.png" and "\u2026" in drawn[0] and drawn[0].startswith("i")
    assert not drawn[0].endswith(".png")


def write_metrics(path, stage1=False):
    """Main loop: 10 epochs x 10 iterations, every iteration logged; loss falls 5 -> 1, LR warms up
    linearly; evaluations after epochs 5 and 10. With ``stage1``: 3 stage-1 epochs of 4 iterations
    logged every 2 iterations (iterations 1 and 3 of each epoch), before the main loop."""
    with open(path, "w") as f:
        if stage1:
            for it in (1, 3, 5, 7, 9, 11):
                f.write(json.dumps({"iteration": it, "epoch": it // 4, "phase": "stage1", "loss_supcon_i2t": 4.15,
                                    "lr": 1e-3 * (12 - it) / 12, "time": 0.1}) + "\n")
        for it in range(100):
            rec = {"iteration": it, "epoch": it // 10, "loss_cls": 5 - 4 * it / 99, "loss_triplet": 0.5,
                   "total_loss": 5.5 - 4 * it / 99, "lr": 1e-4 * (1 + it), "time": 0.1}
            f.write(json.dumps(rec) + "\n")
            if it in (49, 99):
                f.write(json.dumps({"iteration": it + 1, "epoch": it // 10, "Synthetic/mAP": 20.0 + it / 2,
                                    "Synthetic/Rank-1": 40.0, "Synthetic/num_valid_query": 30}) + "\n")
        f.write("\n")


def lines_of(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def is_round(ticks):
    """Evenly spaced ticks whose spacing is 1, 2, 2.5 or 5 times a power of ten, all multiples of it."""
    ticks = np.asarray(ticks, dtype=float)
    step = ticks[1] - ticks[0]
    if not np.allclose(np.diff(ticks), step):
        return False
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5)) and np.allclose(ticks / step, np.round(ticks / step))


def visible(ticks, lo, hi):
    return [t for t in ticks if lo - 1e-12 <= t <= hi + 1e-12]


def test_epoch_positions_by_hand():
    # epoch 0: iterations 0..9 logged at 4 and 9; epoch 1: 10..19 at 14, 19; evaluation of epoch 1 -> 2.0
    recs = [{"iteration": 4, "epoch": 0}, {"iteration": 9, "epoch": 0}, {"iteration": 14, "epoch": 1},
            {"iteration": 19, "epoch": 1}, {"iteration": 20, "epoch": 1, "D/mAP": 5.0}]
    assert epoch_positions(recs) == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0])
    # a resumed file starting at epoch 5 (10 iterations per epoch): epoch 5's start is inferred
    recs = [{"iteration": 54, "epoch": 5}, {"iteration": 59, "epoch": 5}, {"iteration": 64, "epoch": 6},
            {"iteration": 69, "epoch": 6}]
    assert epoch_positions(recs) == pytest.approx([5.5, 6.0, 6.5, 7.0])
    assert epoch_positions([{"lr": 1.0}, {"lr": 2.0}]) == [0.0, 1.0]  # no counters: record index


def test_training_curves_stage1_on_its_own_axis_with_round_ticks(tmp_path):
    write_metrics(tmp_path / "metrics.json", stage1=True)
    fig, titles = curves_figure(str(tmp_path / "metrics.json"), panel_size=(400, 200))
    # stage 1 first (it runs first), one dataset's name moved into the evaluation title
    assert titles == ["[stage1] losses", "[stage1] learning rate", "losses", "learning rate",
                      "evaluation (%): Synthetic"]
    s1_loss, s1_lr, loss, lr, ev = fig.axes
    assert s1_loss.get_xlabel() == "stage1 epoch" and loss.get_xlabel() == "epoch"
    # stage-1 records at iterations 1, 3 of 4-iteration epochs: epochs 0.5, 1.0, 1.5, ...
    np.testing.assert_allclose(lines_of(s1_loss)["loss_supcon_i2t"].get_xdata(), [0.5, 1, 1.5, 2, 2.5, 3])
    assert s1_loss.get_xlim()[1] < 4 and loss.get_xlim()[1] >= 10  # each phase on its own axis
    # main loop: iteration i of 10-iteration epochs sits at (i + 1) / 10; evaluations after epochs 5 and 10
    np.testing.assert_allclose(lines_of(loss)["loss_cls"].get_xdata(), (np.arange(100) + 1) / 10)
    np.testing.assert_allclose(lines_of(loss)["loss_cls"].get_ydata(), 5 - 4 * np.arange(100) / 99)
    np.testing.assert_allclose(lines_of(ev)["mAP"].get_xdata(), [5, 10])
    assert sorted(lines_of(ev)) == ["Rank-1", "mAP"]  # counts (num_*) left out
    # a flat stage-1 loss reads flat from 0; every axis has round ticks
    assert s1_loss.get_ylim()[0] == 0 and ev.get_ylim() == (0, 100)
    for ax in fig.axes:
        assert is_round(visible(ax.get_yticks(), *ax.get_ylim())), (ax.get_title(), ax.get_yticks())
        assert is_round(visible(ax.get_xticks(), *ax.get_xlim())), (ax.get_title(), ax.get_xticks())


def test_plot_curves_command_line_and_bad_lines(tmp_path):
    write_metrics(tmp_path / "metrics.json")
    load_tool("plot_curves").main(["--metrics", str(tmp_path / "metrics.json"), "--output", str(tmp_path / "c.png")])
    with Image.open(tmp_path / "c.png") as im:
        assert im.format == "PNG" and im.size == (720, 3 * 240)
    bad = tmp_path / "bad.json"
    bad.write_text('{"iteration": 0, "lr": 1}\n{"iteration": 1, "lr": \n')
    with pytest.raises(ValueError, match=r"bad.json:2: not valid JSON"):
        read_metrics(str(bad))
    (tmp_path / "nothing.json").write_text('{"iteration": 0, "time": 1.0}\n')
    with pytest.raises(ValueError, match="No plottable scalar"):
        plot_training_curves(str(tmp_path / "nothing.json"), str(tmp_path / "n.png"))


def test_without_matplotlib_the_curves_tool_says_what_to_install(tmp_path, monkeypatch, capsys):
    write_metrics(tmp_path / "metrics.json")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(MissingDependencyError, match=r"clipreid_plugin\[plots\]"):
        plot_training_curves(str(tmp_path / "metrics.json"), str(tmp_path / "c.png"))
    from clipreid_plugin.utils.cli import run_tool

    tool = load_tool("plot_curves")
    code = run_tool(lambda: tool.main(["--metrics", str(tmp_path / "metrics.json"), "--output", str(tmp_path / "c.png")]))
    err = capsys.readouterr().err
    assert code == 2 and "matplotlib" in err and "Traceback" not in err and not (tmp_path / "c.png").exists()
