"""The OSNet configs train on SyntheticReID (tiny sizes via overrides): the loss falls, the weights move,
and the first SOLVER.FIXBASE_EPOCHS epochs train only the classifier (torchreid's fixbase)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from clipreid_plugin.config import load_cfg
from clipreid_plugin.engine import HookBase, run_training

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.BACKBONE.DEPTH", "x0_25",
        "MODEL.HEADS.EMBEDDING_DIM", "64",
        "DATASETS.NAMES", "['SyntheticReID']", "DATASETS.TESTS", "['SyntheticReID']",
        "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "6", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "3",
        "DATASETS.SYNTHETIC.IMAGES_PER_ID", "4", "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "1",
        "DATASETS.SYNTHETIC.NUM_JUNK", "1", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "8", "SOLVER.MAX_EPOCHS", "5",
        "SOLVER.FIXBASE_EPOCHS", "1", "SOLVER.CHECKPOINT_PERIOD", "5", "SOLVER.LOG_PERIOD_ITERS", "1",
        "TEST.IMS_PER_BATCH", "32"]
WATCHED = ("backbone.conv1.conv.weight", "backbone.conv5.bn.running_mean", "heads.fc.0.weight",
           "heads.classifier.weight")


class Snapshots(HookBase):
    """Copies of a few tensors at the start and after every epoch, and every step's loss per epoch
    (metrics.json holds smoothed values; these are the losses the steps optimised)."""

    def __init__(self):
        self.states, self.losses = [], []

    def _take(self):
        sd = self.trainer.model.state_dict()
        self.states.append({k: sd[k].detach().clone() for k in WATCHED})

    def before_train(self):
        self._take()
        self.trainer.model.register_forward_hook(
            lambda m, i, out: self.losses[-1].append(float(sum(out.values()))) if m.training else None)

    def before_epoch(self):
        self.losses.append([])

    def after_epoch(self):
        self._take()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("osnet_data"))


@pytest.mark.parametrize("config", ["osnet_x1_0.yml", "osnet_ain_x1_0.yml"])
def test_osnet_config_trains_with_fixbase(config, data_root, tmp_path):
    cfg = load_cfg(os.path.join(REPO, "configs", "Market1501", config),
                   TINY + ["DATASETS.ROOT_DIR", data_root, "OUTPUT_DIR", str(tmp_path)])
    snaps = Snapshots()
    run = run_training(cfg, on_ready=lambda trainer: trainer.register_hooks([snaps]))
    assert run["results"]["SyntheticReID"]["num_valid_query"] > 0
    first, after_fixbase, last = snaps.states[0], snaps.states[1], snaps.states[-1]
    assert len(snaps.states) == 1 + 5
    # epoch 1: only the classifier trained; the frozen backbone's BN statistics did not move either
    for key in ("backbone.conv1.conv.weight", "backbone.conv5.bn.running_mean", "heads.fc.0.weight"):
        assert torch.equal(after_fixbase[key], first[key]), key
    assert not torch.equal(after_fixbase["heads.classifier.weight"], first["heads.classifier.weight"])
    # then everything trains
    for key in WATCHED:
        assert not torch.equal(last[key], after_fixbase[key]), key
    assert all(p.requires_grad for p in run["trainer"].model.parameters())
    means = [sum(v) / len(v) for v in snaps.losses]
    assert len(means) == 5 and means[-1] < means[0], means
    assert {k for line in open(tmp_path / "metrics.json") for k in json.loads(line) if k.startswith("loss")} == \
        {"loss_cls"}  # torchreid's softmax recipe: one term


def test_fixbase_under_ddp_two_cpu_processes(data_root, tmp_path):
    """Under DistributedDataParallel the frozen layers get no gradient during the fixbase epochs; the
    trainer builds DDP with find_unused_parameters then (without it the second step fails: "Expected to
    have finished reduction in the prior iteration")."""
    out = tmp_path / "out"
    opts = [o for o in TINY]
    opts[opts.index("SOLVER.MAX_EPOCHS") + 1] = "2"
    p = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--num-gpus", "2",
                        "--config-file", os.path.join(REPO, "configs", "Market1501", "osnet_x1_0.yml")]
                       + opts + ["DATASETS.ROOT_DIR", data_root, "OUTPUT_DIR", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    log = open(out / "log.txt").read()
    assert "Fixbase: epochs 1-1 train only heads.classifier." in log and "Fixbase over: every layer trains." in log
    assert json.load(open(out / "results.json"))["SyntheticReID"]["num_valid_query"] > 0
