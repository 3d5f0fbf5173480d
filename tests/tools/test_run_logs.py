"""What a run tells its user, through tools/train_net.py (in-process): DATASETS.ROOT_DIR stored
resolved (an --eval-only from another folder finds the data; an override still wins), the
evaluation's dataset table without the unused train split, one epoch numbering, and an
evaluation that says once what it loaded. Also the library notices kept out of the log: the
depth-specific weights note, open_clip's random-init warning, VeRi's keypoint notice once."""

import logging
import os
import shutil
from contextlib import contextmanager

import pytest
import torch
import yaml

import train_net  # tools/ is on the test path (setup.cfg)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIP_TINY = os.path.join(REPO, "projects/CLIPReID/configs/synthetic/cnn_clipreid_tiny.yml")
TINY = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
        "DATASETS.SYNTHETIC.IMAGES_PER_ID", "4", "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "2",
        "DATASETS.SYNTHETIC.NUM_JUNK", "1", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
        "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "INPUT.PADDING.SIZE", "2",
        "SOLVER.MAX_EPOCHS", "1", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.CHECKPOINT_PERIOD", "1",
        "TEST.EVAL_PERIOD", "1", "TEST.IMS_PER_BATCH", "32", "CLIPREID.STAGE1.MAX_EPOCHS", "1",
        "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"]


@contextmanager
def _cwd(path):
    old = os.getcwd()
    os.makedirs(path, exist_ok=True)
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextmanager
def _records(name="clipreid_plugin"):
    """Every record the logger ``name`` emits (the package logger does not propagate to caplog)."""
    got = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = got.append
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield got
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def relative_root_run(tmp_path_factory):
    """Tiny CLIP-ReID trained from folder a/ with DATASETS.ROOT_DIR "data" (relative)."""
    root = tmp_path_factory.mktemp("runlogs")
    with _cwd(root / "a"):
        assert train_net.cli(["--config-file", CLIP_TINY, "DATASETS.ROOT_DIR", "data", "OUTPUT_DIR",
                              str(root / "a" / "out")] + TINY) == 0
    return root


def test_config_stores_the_root_dir_resolved_and_eval_only_works_elsewhere(relative_root_run):
    root = relative_root_run
    out = root / "a" / "out"
    stored = yaml.safe_load((out / "config.yaml").read_text())["DATASETS"]["ROOT_DIR"]
    assert stored == str(root / "a" / "data")
    from clipreid_plugin.data.datasets import bases

    bases._SHOWN_SUMMARIES.clear()  # as in the fresh process of a command line
    with _cwd(root / "b"):
        assert train_net.cli(["--config-file", str(out / "config.yaml"), "--eval-only", "MODEL.WEIGHTS",
                              str(out / "model_final.pth"), "OUTPUT_DIR", "eval"]) == 0
    assert (root / "b" / "eval" / "results.json").is_file()
    log = (root / "b" / "eval" / "log.txt").read_text()
    # the evaluation says once what it loaded: no random-weights note before the checkpoint's load
    assert log.count("]: Loaded ") == 1 and "tensors from " + str(out / "model_final.pth") in log, log
    assert "random weights" not in log, log
    table = log[log.index("SyntheticReID (person):"):].splitlines()
    assert [line.split("|")[1].strip() for line in table[3:5]] == ["query", "gallery"] and "|" not in table[5]
    # an override of the root still wins (the data moved; the relative path is resolved from b/)
    shutil.move(str(root / "a" / "data"), str(root / "b" / "moved"))
    with _cwd(root / "b"):
        assert train_net.cli(["--config-file", str(out / "config.yaml"), "--eval-only", "MODEL.WEIGHTS",
                              str(out / "model_final.pth"), "OUTPUT_DIR", "eval2", "DATASETS.ROOT_DIR", "moved"]) == 0
    assert yaml.safe_load((root / "b" / "eval2" / "config.yaml").read_text())["DATASETS"]["ROOT_DIR"] == \
        str(root / "b" / "moved")


def test_training_log_counts_epochs_from_one(relative_root_run):
    log = (relative_root_run / "a" / "out" / "log.txt").read_text()
    assert "iterations in the first epoch." in log and "in epoch 0" not in log
    assert "Starting the main loop at epoch 1 of 1" in log
    assert "TensorBoard not installed" not in log or "pip install 'clipreid_plugin[tensorboard]'" in log


def test_weights_note_names_the_file_of_the_depth_in_use():
    from clipreid_plugin.config import get_cfg
    from clipreid_plugin.modeling.backbones import build_backbone

    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.PRETRAIN", False,
                         "MODEL.BACKBONE.PRETRAIN_PATH", "~/.cache/torch/hub/checkpoints/resnet50-0676ba61.pth"])
    with _records() as records:
        build_backbone(cfg)
    text = " ".join(r.getMessage() for r in records)
    assert "resnet50-0676ba61.pth is not loaded" in text and "DEPTH '18x' are resnet18-f37072fd.pth" in text


def test_open_clip_random_init_warning_is_not_shown(caplog):
    from clipreid_plugin.plugins.clipreid.clip_weights import load_clip

    with caplog.at_level(logging.WARNING, logger=""), _records() as records:
        load_clip("ReID-Tiny-RN")
    assert "No pretrained weights loaded" not in caplog.text
    assert any("Built ReID-Tiny-RN with random weights" in r.getMessage() for r in records)  # said once, by us


def test_veri_keypoint_notice_once_per_process(tmp_path):
    from clipreid_plugin.data.datasets.veri import VeRi

    for split in ("image_train", "image_query", "image_test"):
        (tmp_path / "VeRi" / split).mkdir(parents=True)
        from PIL import Image

        Image.new("RGB", (8, 8)).save(tmp_path / "VeRi" / split / "0001_c001_00016450_0.jpg")
    with _records() as records:
        VeRi(str(tmp_path))
        VeRi(str(tmp_path))
    assert len([r for r in records if "keypoint" in r.getMessage() or "view ids are 0" in r.getMessage()]) == 1


def test_fvcore_uncounted_ops_list_stays_out_of_the_console():
    """The list of ops fvcore does not count goes to the log file (DEBUG), not to the console (INFO)."""
    import torchvision

    from clipreid_plugin.comparison.model_stats import gflops_per_image

    class Embed(torch.nn.Module):  # a model with element-wise ops fvcore skips (relu, add)
        def __init__(self):
            super().__init__()
            self.net = torchvision.models.resnet18(num_classes=8)

        def forward(self, batch):
            return self.net(batch["images"])

    with _records() as records:
        assert gflops_per_image(Embed(), (64, 32)) > 0
    uncounted = [r for r in records if "does not count" in r.getMessage()]
    assert uncounted and all(r.levelno == logging.DEBUG for r in uncounted)


def test_console_log_follows_the_current_stdout(monkeypatch):
    """A tool's logger set up earlier writes to sys.stdout as it is now (a closed capture of an
    earlier test or a notebook's redirect gave 'Logging error' tracebacks)."""
    import io

    from clipreid_plugin.utils.logger import setup_logger

    setup_logger()
    later = io.StringIO()
    monkeypatch.setattr("sys.stdout", later)
    logging.getLogger("clipreid_plugin.test").info("after the swap")
    assert "after the swap" in later.getvalue()
