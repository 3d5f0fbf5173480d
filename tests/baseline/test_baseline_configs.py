"""The bag-of-tricks configs resolve to fast-reid's BoT recipe (its configs/Base-bagtricks.yml at c9bc3ce) and build
their models."""

import os

import pytest
import torch

from clipreid_plugin.config import get_cfg
from clipreid_plugin.modeling import build_model
from clipreid_plugin.solver import build_lr_scheduler, build_optimizer

from training_checks import assert_weights_moved

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def _load(rel):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, rel))
    return cfg


@pytest.mark.parametrize("rel", ["Market1501/bagtricks_R50.yml", "SyntheticReID/bagtricks_R18.yml"])
def test_recipe_values(rel):
    cfg = _load(rel)
    m, s = cfg.MODEL, cfg.SOLVER
    assert m.META_ARCHITECTURE == "Baseline" and m.BACKBONE.NAME == "build_resnet_backbone"
    assert m.BACKBONE.LAST_STRIDE == 1 and m.HEADS.NAME == "EmbeddingHead"
    # bag of tricks: triplet on the pre-BN feature (NECK_FEAT, fast-reid's meaning), test on the post-BN one
    assert m.HEADS.NECK_FEAT == "before" and m.HEADS.EVAL_FEAT == "after"
    assert m.LOSSES.NAMES == ("CrossEntropyLoss", "TripletLoss")
    assert m.LOSSES.CE.EPSILON == 0.1 and m.LOSSES.TRI.MARGIN == 0.3
    assert cfg.INPUT.REA.ENABLED and cfg.INPUT.FLIP.ENABLED and cfg.DATALOADER.NUM_INSTANCE == 4
    assert m.HEADS.POOL_LAYER == "GlobalAvgPool" and m.HEADS.CLS_LAYER == "Linear" and m.HEADS.WITH_BNNECK
    assert m.LOSSES.CE.CONVENTION == "fastreid" and m.LOSSES.TRI.HARD_MINING and not m.LOSSES.TRI.NORM_FEAT
    # fast-reid's schedule: per-iteration linear warmup, then milestones counted after the warmup
    assert s.OPTIMIZER_NAME == "Adam" and s.SCHED.NAME == "MultiStepLR" and s.WARMUP_METHOD == "linear"
    assert isinstance(s.BASE_LR, float) and isinstance(s.WEIGHT_DECAY, float)
    assert s.IMS_PER_BATCH % cfg.DATALOADER.NUM_INSTANCE == 0
    assert list(s.STEPS_EPOCHS) == sorted(s.STEPS_EPOCHS) and s.STEPS_EPOCHS[-1] < s.MAX_EPOCHS
    if rel.startswith("Market1501"):
        assert cfg.DATASETS.NAMES == ("Market1501",) and m.BACKBONE.DEPTH == "50x" and m.BACKBONE.PRETRAIN
        assert m.BACKBONE.PRETRAIN_PATH.endswith("resnet50-0676ba61.pth")
        assert cfg.INPUT.SIZE_TRAIN == [256, 128] and s.IMS_PER_BATCH == 64
        assert (s.BASE_LR, s.WEIGHT_DECAY, s.MAX_EPOCHS, tuple(s.STEPS_EPOCHS)) == (3.5e-4, 5e-4, 120, (40, 90))
        assert (s.WARMUP_ITERS, s.WARMUP_EPOCHS, s.WARMUP_FACTOR, s.GAMMA) == (2000, 0, 0.1, 0.1)
        assert s.AMP.ENABLED and cfg.TEST.METRIC == "cosine" and s.WEIGHT_DECAY_NORM == 5e-4
    else:
        assert cfg.DATASETS.NAMES == ("SyntheticReID",) and not m.BACKBONE.PRETRAIN
        # the demo's short run warms up over one epoch (not 2000 iterations) and trains in float32
        assert (s.WARMUP_ITERS, s.WARMUP_EPOCHS, s.MAX_EPOCHS) == (0, 1, 12) and not s.AMP.ENABLED


def test_synthetic_demo_model_trains_one_step():
    cfg = _load("SyntheticReID/bagtricks_R18.yml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.HEADS.NUM_CLASSES = 8
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt, iters_per_epoch=10)
    sched.step()
    h, w = cfg.INPUT.SIZE_TRAIN
    p, k = cfg.SOLVER.IMS_PER_BATCH // cfg.DATALOADER.NUM_INSTANCE, cfg.DATALOADER.NUM_INSTANCE
    batch = {"images": torch.randn(p * k, 3, h, w), "targets": torch.arange(p).repeat_interleave(k)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = model.train()(batch)
    sum(losses.values()).backward()
    opt.step()
    assert all(torch.isfinite(v) for v in losses.values())
    # the step trained: the weights moved and the same batch now has a lower identity loss (the
    # batch-hard triplet term of random-noise images need not fall: Adam's first step moves every
    # weight by about the LR, which reshuffles the hardest pairs)
    assert_weights_moved(before, model.state_dict(), modules=["backbone", "heads"])
    with torch.no_grad():
        again = model(batch)
    assert again["loss_cls"].item() < losses["loss_cls"].item()
