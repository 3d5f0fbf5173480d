"""The fast-reid config converter on fast-reid's own shipped configs (tests/data/fastreid_configs, an
unmodified copy of fast-reid c9bc3ce's configs/, Apache-2.0).

Every key of the four Base files and of every per-dataset config is mapped with fast-reid's meaning
(the two exceptions are named with their reasons: the ViT options of bagtricks_vit.yml and the
VeRi-Wild dataset, which this toolkit does not have); every converted config loads and validates;
the two meanings that were silently wrong before (NECK_FEAT, STEPS counted after warmup) are
fast-reid's; the converted Base configs train on SyntheticReID; tools/train_net.py accepts a
fast-reid file as it is.
"""

import glob
import json
import os
import shutil

import pytest
import torch

from clipreid_plugin.config import load_cfg
from clipreid_plugin.engine import run_training
from clipreid_plugin.engine.validate import validate_config
from clipreid_plugin.solver import build_lr_scheduler, build_optimizer
from clipreid_plugin.usertools.fastreid_config import (
    convert_fastreid_config, convert_fastreid_config_with_notes, converted_yaml, is_fastreid_config,
)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FASTREID = os.path.join(REPO, "tests", "data", "fastreid_configs")
BASES = ["Base-bagtricks.yml", "Base-AGW.yml", "Base-SBS.yml", "Base-MGN.yml"]
PER_DATASET = sorted(os.path.relpath(p, FASTREID) for p in glob.glob(os.path.join(FASTREID, "*", "*.yml")))
# the only keys left out, with why (no ViT options of fast-reid's; no VeRi-Wild dataset here)
EXPECTED_UNMAPPED = {
    "Market1501/bagtricks_vit.yml": {"MODEL.BACKBONE.STRIDE_SIZE", "MODEL.BACKBONE.DROP_PATH_RATIO",
                                     "MODEL.BACKBONE.DROP_RATIO", "MODEL.BACKBONE.ATT_DROP_RATE"},
    "VERIWild/bagtricks_R50-ibn.yml": {"DATASETS.NAMES", "DATASETS.TESTS"},
}
SYNTHETIC = ["DATASETS.NAMES", "('SyntheticReID',)", "DATASETS.TESTS", "('SyntheticReID',)"]


def _converted_file(rel, tmp_path):
    src = os.path.join(FASTREID, rel)
    ours, unmapped = convert_fastreid_config(src)
    out = tmp_path / rel.replace("/", "_")
    out.write_text(converted_yaml(ours, unmapped, src))
    return str(out)


@pytest.mark.parametrize("rel", BASES + PER_DATASET)
def test_every_key_of_fastreids_configs_is_mapped(rel):
    ours, unmapped = convert_fastreid_config(os.path.join(FASTREID, rel))
    assert {u.key for u in unmapped} == EXPECTED_UNMAPPED.get(rel, set()), [tuple(u) for u in unmapped]
    assert all(u.reason for u in unmapped)
    assert is_fastreid_config(os.path.join(FASTREID, rel))


def test_our_own_configs_are_not_taken_for_fastreids():
    for path in glob.glob(os.path.join(REPO, "configs", "*", "*.yml")):
        assert not is_fastreid_config(path), path


# one of each kind of key the per-dataset files add (ResNeSt, R101, SGD + BalancedIdentitySampler, VehicleID's
# test sets, MGN); every file is mapped above
LOADED = BASES + ["Market1501/sbs_S50.yml", "MSMT17/AGW_R101-ibn.yml", "VeRi/sbs_R50-ibn.yml",
                  "VehicleID/bagtricks_R50-ibn.yml", "DukeMTMC/mgn_R50-ibn.yml"]


@pytest.mark.parametrize("rel", LOADED)
def test_converted_configs_load_and_validate(rel, tmp_path):
    cfg = load_cfg(_converted_file(rel, tmp_path), SYNTHETIC + ["DATASETS.ROOT_DIR", str(tmp_path)])
    validate_config(cfg)
    assert cfg.SOLVER.SCHED.NAME in ("MultiStepLR", "CosineAnnealingLR") and cfg.SOLVER.WARMUP_EPOCHS == 0


def test_neck_feat_and_steps_have_fastreids_meaning(tmp_path):
    """bagtricks: the triplet loss on the pooled feature (NECK_FEAT before), evaluation on the post-BN
    feature; STEPS [40, 90] with 2000 warmup iterations at 202 iterations per epoch drop the LR at the
    start of the 50th and 100th epochs (hand-computed: 3.5e-4 -> 3.5e-5 -> 3.5e-6)."""
    ours, _, notes = convert_fastreid_config_with_notes(os.path.join(FASTREID, "Market1501", "bagtricks_R50.yml"))
    assert ours["MODEL.HEADS.NECK_FEAT"] == "before" and ours["MODEL.HEADS.EVAL_FEAT"] == "after"
    assert ours["MODEL.LOSSES.CE.CONVENTION"] == "fastreid"
    assert ours["SOLVER.SCHED.NAME"] == "MultiStepLR" and ours["SOLVER.STEPS_EPOCHS"] == [40, 90]
    assert (ours["SOLVER.WARMUP_ITERS"], ours["SOLVER.WARMUP_EPOCHS"], ours["SOLVER.WARMUP_FACTOR"]) == (2000, 0, 0.1)
    assert ours["SOLVER.WEIGHT_DECAY_NORM"] == 5e-4 and ours["SOLVER.WEIGHT_DECAY_BIAS"] == 5e-4  # fast-reid's defaults
    assert any("WARMUP_EPOCHS 0" in n for n in notes)
    cfg = load_cfg(_converted_file("Market1501/bagtricks_R50.yml", tmp_path))
    opt = build_optimizer(cfg, torch.nn.Linear(2, 2))
    sched = build_lr_scheduler(cfg, opt, 202)
    lr = [sched.lr_at(e * 202)[0] for e in range(120)]
    assert lr[0] == pytest.approx(3.5e-5) and lr[10] == pytest.approx(3.5e-4)
    assert lr[48] == pytest.approx(3.5e-4) and lr[49] == pytest.approx(3.5e-5)
    assert lr[98] == pytest.approx(3.5e-5) and lr[99] == pytest.approx(3.5e-6)
    sbs, _ = convert_fastreid_config(os.path.join(FASTREID, "Market1501", "sbs_R50-ibn.yml"))
    assert sbs["MODEL.HEADS.NECK_FEAT"] == "after" and sbs["MODEL.FREEZE_LAYERS"] == ["backbone"]
    assert (sbs["SOLVER.FREEZE_ITERS"], sbs["SOLVER.DELAY_EPOCHS"], sbs["INPUT.AUTOAUG.PROB"]) == (1000, 30, 0.1)
    veri, _ = convert_fastreid_config(os.path.join(FASTREID, "VehicleID", "bagtricks_R50-ibn.yml"))
    assert veri["DATASETS.TESTS"] == ["VehicleID"] and veri["DATASETS.VEHICLEID.TEST_SIZE"] == 800


# tiny sizes: ResNet-18 layout (the files' IBN / non-local / heads / losses kept), 96x32 so that MGN's
# map splits in three, no warmup (a few iterations would all be inside the 2000 of the files)
TINY = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.BACKBONE.PRETRAIN_PATH", "", "INPUT.SIZE_TRAIN", "[96, 32]", "INPUT.SIZE_TEST", "[96, 32]",
        "INPUT.PADDING.SIZE", "2", "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "4", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "3",
        "DATASETS.SYNTHETIC.IMAGES_PER_ID", "8", "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "1",
        "DATASETS.SYNTHETIC.NUM_JUNK", "1", "DATASETS.SYNTHETIC.SIZE", "[96, 32]",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.NUM_INSTANCE", "2", "SOLVER.IMS_PER_BATCH", "8",
        "SOLVER.MAX_EPOCHS", "3", "SOLVER.WARMUP_ITERS", "0", "SOLVER.DELAY_EPOCHS", "1", "SOLVER.FREEZE_ITERS", "2",
        "SOLVER.BASE_LR", "0.001", "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.CHECKPOINT_MAX_KEEP", "0", "TEST.EVAL_PERIOD", "3", "TEST.IMS_PER_BATCH", "16",
        "SOLVER.AMP.ENABLED", "False", "SOLVER.LOG_PERIOD_ITERS", "1"]


@pytest.mark.parametrize("rel", BASES)
def test_converted_base_configs_train_on_synthetic_data(rel, tmp_path):
    torch.manual_seed(0)
    root = tmp_path / "data"
    cfg = load_cfg(_converted_file(rel, tmp_path), SYNTHETIC + TINY + ["DATASETS.ROOT_DIR", str(root),
                                                                       "OUTPUT_DIR", str(tmp_path / "out")])
    run = run_training(cfg)
    assert run["results"]["SyntheticReID"]["num_valid_query"] > 0
    losses = [sum(v for k, v in json.loads(line).items() if k.startswith("loss"))
              for line in open(tmp_path / "out" / "metrics.json") if '"loss' in line]
    assert len(losses) >= 6 and sum(losses[-2:]) < sum(losses[:2]), losses
    # weights moved between the end of the first epoch and the end of training
    first = torch.load(tmp_path / "out" / "model_0001.pth", weights_only=False)["model"]
    final = torch.load(tmp_path / "out" / "model_final.pth", weights_only=False)["model"]
    floats = [k for k, v in final.items() if v.is_floating_point()]
    moved = [k for k in floats if not torch.equal(first[k], final[k])]
    assert len(moved) > len(floats) // 2, (len(moved), len(floats))


def test_train_net_accepts_a_fastreid_yaml(tmp_path, capsys):
    """python tools/train_net.py --config-file fastreid/configs/Market1501/sbs_R50-ibn.yml: detected,
    converted on load, the notes printed; trains (tiny overrides) and evaluates."""
    import importlib.util

    folder = tmp_path / "fastreid" / "configs"
    shutil.copytree(FASTREID, folder)
    spec = importlib.util.spec_from_file_location("train_net_fr", os.path.join(REPO, "tools", "train_net.py"))
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    out = tmp_path / "out"
    argv = ["--config-file", str(folder / "Market1501" / "sbs_R50-ibn.yml")] + SYNTHETIC + TINY + \
        ["DATASETS.ROOT_DIR", str(tmp_path / "data"), "OUTPUT_DIR", str(out), "SOLVER.MAX_EPOCHS", "1",
         "MODEL.BACKBONE.WITH_NL", "False"]
    assert train_net.cli(argv) == 0, capsys.readouterr().err[-2000:]
    printed = capsys.readouterr().out
    assert "is a fast-reid config: converted" in printed and "note: SOLVER.WARMUP_EPOCHS 0" in printed
    saved = load_cfg(str(out / "config.yaml"))
    assert saved.MODEL.HEADS.CLS_LAYER == "CircleSoftmax" and saved.SOLVER.SCHED.NAME == "CosineAnnealingLR"
    assert os.path.isfile(out / "results.json")
