"""tools/demo.py's pictures: per method the training curves (the untrained evaluation at epoch 0)
and a rank strip, TensorBoard events or the line naming their extra, and the list of files written."""

import csv
import importlib.util
import os

from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tiny data, 64x32 images, two epochs evaluated after each, CPU
TINY = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
        "DATASETS.SYNTHETIC.IMAGES_PER_ID", "4", "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "2",
        "DATASETS.SYNTHETIC.NUM_JUNK", "1", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
        "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "INPUT.PADDING.SIZE", "2",
        "SOLVER.MAX_EPOCHS", "2", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.CHECKPOINT_PERIOD", "2",
        "TEST.EVAL_PERIOD", "1", "TEST.IMS_PER_BATCH", "32", "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"]


def _demo():
    spec = importlib.util.spec_from_file_location("demo_tool", os.path.join(REPO, "tools", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def test_demo_draws_curves_from_the_untrained_model_and_a_rank_strip_and_lists_its_files(tmp_path, capsys):
    demo = _demo()
    out = tmp_path / "demo"
    assert demo.main(["--methods", "bagtricks", "--output-dir", str(out), "DATASETS.ROOT_DIR", str(tmp_path / "data")]
                     + TINY) == 0
    printed = capsys.readouterr().out
    run = out / "bagtricks" / "SyntheticReID"
    with open(out / "demo_results.csv") as f:
        row = next(csv.DictReader(f))
    # the curves' evaluation panel: the untrained mAP at epoch 0, then one point per trained epoch
    from clipreid_plugin.usertools.training_curves import curves_figure, read_metrics

    record = {"untrained": {"SyntheticReID": {"mAP": float(row["mAP_untrained"])}}}
    fig, titles = curves_figure([demo.untrained_record(record)] + read_metrics(str(run / "metrics.json")))
    panel = fig.axes[titles.index("evaluation (%): SyntheticReID")]
    line = next(ln for ln in panel.get_lines() if ln.get_label() == "mAP")
    assert list(line.get_xdata()) == [0.0, 1.0, 2.0]
    assert abs(line.get_ydata()[0] - float(row["mAP_untrained"])) < 0.05  # the CSV rounds to 0.1
    assert abs(line.get_ydata()[-1] - float(row["mAP"])) < 0.05
    with Image.open(run / "training_curves.png") as im:
        assert im.format == "PNG"
    with Image.open(run / "rank_strip.png") as im:
        assert im.format == "PNG" and im.size[1] > 3 * 96  # four rows of 96-pixel thumbnails
    listed = printed[printed.index("Files written ("):].splitlines()
    for f in ("demo_results.md", "demo_results.png", "bagtricks/SyntheticReID/training_curves.png",
              "bagtricks/SyntheticReID/rank_strip.png", "bagtricks/SyntheticReID/metrics.json",
              "bagtricks/SyntheticReID/SyntheticReID_results.npz"):
        assert f"  {out / f}" in listed, (f, listed)
    on_disk = sorted(os.path.join(r, f) for r, _, names in os.walk(out) for f in names)
    assert int(listed[0].split("(")[1].split(")")[0]) == len(on_disk)  # a fresh folder: every file listed
    if importlib.util.find_spec("tensorboard") is None:
        assert "No TensorBoard events: pip install 'clipreid_plugin[tensorboard]'" in printed
    else:
        assert any(os.path.basename(f).startswith("events.out.tfevents") for f in on_disk)
        assert f"tensorboard --logdir {out}" in printed
