"""Issue 17's mixing configs: CLIP-ReID's prompt phase and image-to-text loss on another toolkit's
recipe (fast-reid SBS R50-ibn, torchreid OSNet x1.0). Each file keeps its recipe's values, adds
CLIP-ReID's (the reference's stage-1 values, CLIPREID_SPEC.md 1.4), validates, and builds a CLIPReID
model with a learned projection on the host backbone (at tiny sizes, random weights)."""

import os

import pytest

from clipreid_plugin.config import load_cfg
from clipreid_plugin.engine import validate_config
from clipreid_plugin.engine.fixbase import resolve_open_layers
from clipreid_plugin.modeling import build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "projects", "CLIPReID", "configs", "market1501")

# a smaller member of the same backbone family, a random tiny text tower, synthetic data: load, validate, build
TINY = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False", "CLIPREID.PROMPT.TEXT_WEIGHTS", "",
        "CLIPREID.BACKBONE.MODEL_NAME", "ReID-Tiny-RN", "DATASETS.NAMES", "['SyntheticReID']",
        "DATASETS.TESTS", "['SyntheticReID']"]

# file -> (tiny backbone override, the recipe's values the file must keep: (key path, value))
MIXING = {
    "sbs_R50-ibn_clipreid.yml": (
        ["MODEL.BACKBONE.DEPTH", "18x"],
        # fast-reid's configs/Market1501/sbs_R50-ibn.yml (Base-SBS.yml)
        [("MODEL.BACKBONE.NAME", "build_resnet_backbone"), ("MODEL.BACKBONE.WITH_IBN", True),
         ("MODEL.BACKBONE.WITH_NL", True), ("INPUT.SIZE_TRAIN", [384, 128]), ("INPUT.TRANSFORMS", ["AutoAugment"]),
         ("SOLVER.SCHED.NAME", "CosineAnnealingLR"), ("SOLVER.DELAY_EPOCHS", 30), ("SOLVER.FREEZE_ITERS", 1000),
         ("MODEL.LOSSES.TRI.MARGIN", 0.0), ("DATALOADER.NUM_INSTANCE", 16)]),
    "osnet_x1_0_clipreid.yml": (
        ["MODEL.BACKBONE.DEPTH", "x0_25"],
        # torchreid's im_osnet_x1_0_softmax_256x128_amsgrad_cosine.yaml (configs/Base-osnet.yml)
        [("MODEL.BACKBONE.NAME", "build_osnet_backbone"), ("SOLVER.OPTIMIZER_NAME", "AMSGrad"),
         ("SOLVER.BASE_LR", 0.0015), ("SOLVER.MAX_EPOCHS", 250), ("SOLVER.FIXBASE_EPOCHS", 10),
         ("INPUT.SIZE_TRAIN", [256, 128]), ("DATALOADER.SAMPLER", "PKSampler")]),
}


def _value(cfg, path):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return list(cfg) if isinstance(cfg, (list, tuple)) else cfg


@pytest.mark.parametrize("name", list(MIXING))
def test_mixing_config_keeps_its_recipe_adds_clipreid_and_builds(name, tmp_path):
    tiny_backbone, recipe = MIXING[name]
    cfg = load_cfg(os.path.join(CONFIGS, name))
    for path, value in recipe:
        assert _value(cfg, path) == value, path
    assert cfg.MODEL.META_ARCHITECTURE == "CLIPReID" and tuple(cfg.TRAINER.HOOKS) == ("CLIPReIDStage1Hook",)
    assert "ImageTextCrossEntropyLoss" in cfg.MODEL.LOSSES.NAMES and cfg.DATASETS.NAMES == ("Market1501",)
    s1 = cfg.CLIPREID.STAGE1
    assert (s1.IMS_PER_BATCH, s1.MAX_EPOCHS, s1.BASE_LR, s1.WARMUP_LR_INIT, s1.LR_MIN, s1.WEIGHT_DECAY,
            s1.WARMUP_EPOCHS) == (64, 60, 3.5e-4, 1e-5, 1e-6, 1e-4, 5)
    assert (cfg.CLIPREID.PROMPT.N_CTX, cfg.CLIPREID.LOSSES.I2T.EPSILON, cfg.CLIPREID.PROJ_DIM) == (4, 0.1, 0)
    assert cfg.CLIPREID.BACKBONE.MODEL_NAME == "RN50"

    tiny = load_cfg(os.path.join(CONFIGS, name), TINY + tiny_backbone + ["DATASETS.ROOT_DIR", str(tmp_path)])
    validate_config(tiny)
    tiny.defrost()
    tiny.MODEL.HEADS.NUM_CLASSES = 5
    model = build_model(tiny)
    assert type(model).__name__ == "CLIPReID" and tiny.MODEL.BACKBONE.NAME == cfg.MODEL.BACKBONE.NAME
    # the host backbone has no CLIP projection: a learned one maps its pooled feature onto the text width
    assert model.image_proj is not None and model.proj_dim == model.text_head.out_dim == 64
    if tiny.SOLVER.FIXBASE_EPOCHS:
        assert resolve_open_layers(model, tiny.MODEL.OPEN_LAYERS) == ["image_proj", "neck.classifier",
                                                                       "neck_proj.classifier"]
