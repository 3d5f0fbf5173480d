"""Every meta-architecture with every backbone: each of {Baseline, CLIPBaseline, CLIPReID} trains and
evaluates on SyntheticReID with each of {torchvision ResNet, CLIP ModifiedResNet, CLIP ViT,
torchvision ViT} (tiny sizes, random weights). Issue 17's mixing rows add CLIP-ReID on fast-reid's
ResNet-IBN and torchreid's OSNet, and fast-reid's SBS head on the CLIP towers. Combinations that
cannot work by construction (among them MGN on a CLIP tower) fail when the model is built, with a
message that says why."""

import json
import os

import pytest
import torch

from clipreid_plugin.config import ConfigError, load_cfg
from clipreid_plugin.engine import run_training
from clipreid_plugin.modeling.backbones import vit as tv_vit

from training_checks import assert_trained

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BACKBONES = {
    "torchvision_resnet": ["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.DEPTH", "18x"],
    "clip_modified_resnet": ["MODEL.BACKBONE.NAME", "build_clip_backbone",
                             "CLIPREID.BACKBONE.MODEL_NAME", "ReID-Tiny-RN"],
    "clip_vit": ["MODEL.BACKBONE.NAME", "build_clip_backbone", "CLIPREID.BACKBONE.MODEL_NAME", "ReID-Tiny-ViT-16"],
    "torchvision_vit": ["MODEL.BACKBONE.NAME", "build_vit_backbone", "MODEL.BACKBONE.VIT.ARCH", "vit_tiny_test"],
}
# issue 17's backbones, mixed with CLIP-ReID below (not in the full product above, to keep the suite short)
NEW_BACKBONES = {
    "fastreid_resnet_ibn": ["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.DEPTH", "18x",
                            "MODEL.BACKBONE.WITH_IBN", "True"],
    "osnet": ["MODEL.BACKBONE.NAME", "build_osnet_backbone", "MODEL.BACKBONE.DEPTH", "x0_25"],
}
# fast-reid's SBS head (configs/Base-SBS.yml): GeM with learnable p, CircleSoftmax, triplet after the BN
SBS_HEAD = ["MODEL.HEADS.POOL_LAYER", "GeneralizedMeanPoolingP", "MODEL.HEADS.CLS_LAYER", "CircleSoftmax",
            "MODEL.HEADS.SCALE", "64.0", "MODEL.HEADS.MARGIN", "0.35", "MODEL.HEADS.NECK_FEAT", "after"]
META_ARCHS = {
    "Baseline": ["MODEL.META_ARCHITECTURE", "Baseline"],
    "CLIPBaseline": ["MODEL.META_ARCHITECTURE", "CLIPBaseline"],
    # CLIP-ReID's text tower: the backbone's own CLIP model, else a random ReID-Tiny-RN one (see TINY)
    "CLIPReID": ["MODEL.META_ARCHITECTURE", "CLIPReID", "TRAINER.HOOKS", "['CLIPReIDStage1Hook']",
                 "MODEL.LOSSES.NAMES", "['CrossEntropyLoss', 'TripletLoss', 'ImageTextCrossEntropyLoss']",
                 "CLIPREID.STAGE1.MAX_EPOCHS", "1", "CLIPREID.STAGE1.IMS_PER_BATCH", "8",
                 "CLIPREID.STAGE1.WARMUP_EPOCHS", "0"],
}
# meta-architectures only mixed in named rows below
OTHER_META_ARCHS = {"MGN": ["MODEL.META_ARCHITECTURE", "MGN"]}
TINY = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.BACKBONE.PRETRAIN_PATH", "",
        "PLUGINS", "['clipreid_plugin.plugins.clipreid']", "CLIPREID.BACKBONE.MODEL_NAME", "ReID-Tiny-RN",
        "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "INPUT.PADDING.SIZE", "2",
        "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "4", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "3",
        "DATASETS.SYNTHETIC.IMAGES_PER_ID", "4", "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "1",
        "DATASETS.SYNTHETIC.NUM_JUNK", "1", "DATASETS.SYNTHETIC.SIZE", "[32, 16]",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.NUM_INSTANCE", "2",
        "SOLVER.MAX_EPOCHS", "2", "SOLVER.IMS_PER_BATCH", "8", "SOLVER.WARMUP_EPOCHS", "0", "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "2", "TEST.IMS_PER_BATCH", "16",
        "SOLVER.AMP.ENABLED", "False"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mixing_data"))


@pytest.fixture(autouse=True)
def tiny_torchvision_vit(monkeypatch):
    """A 2-layer, width-32 torchvision ViT (patch 16) registered for the test only."""
    monkeypatch.setitem(tv_vit.VIT_ARCHS, "vit_tiny_test", (16, 2, 2, 32, 64, "ViT_B_16_Weights"))


def _cfg(meta, backbone, root, out, *extra):
    return load_cfg(os.path.join(REPO, "configs", "Base-bagtricks.yml"),
                    TINY + {**BACKBONES, **NEW_BACKBONES}[backbone] + {**META_ARCHS, **OTHER_META_ARCHS}[meta]
                    + ["DATASETS.ROOT_DIR", root, "OUTPUT_DIR", out]
                    + list(extra))


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("meta", list(META_ARCHS))
def test_meta_architecture_trains_and_evaluates_with_backbone(meta, backbone, data_root, tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(meta, backbone, data_root, str(tmp_path))
    run = run_training(cfg)
    results = run["results"]["SyntheticReID"]
    assert 0 <= results["mAP"] <= 100 and results["num_valid_query"] > 0
    losses = {k for line in open(tmp_path / "metrics.json") for k in json.loads(line) if k.startswith("loss")}
    expected = {"loss_cls", "loss_triplet"} | ({"loss_i2t", "loss_supcon_i2t", "loss_supcon_t2i"}
                                               if meta == "CLIPReID" else set())
    assert losses == expected
    # two epochs of two steps: the loss fell (the identity loss in every combination; the batch-hard
    # triplet term, and with it the total, rises in some) and the backbone moved
    assert_trained(str(tmp_path), modules=["backbone"])
    model = run["trainer"].model
    if meta != "Baseline":
        # two necks: on the backbone's feature and on the projected one (learned when the backbone has none)
        has_projection = backbone.startswith("clip")
        assert (model.image_proj is None) == has_projection
        if meta == "CLIPReID":
            assert model.has_text_features() and model.proj_dim == model.text_head.out_dim


# two prompt-phase epochs with a checkpoint each, so that the rows can assert the prompts trained too
STAGE1_TWICE = ["CLIPREID.STAGE1.MAX_EPOCHS", "2", "CLIPREID.STAGE1.CHECKPOINT_PERIOD", "1"]
# issue 17's mixing: (meta-architecture, backbone, extra overrides, the feature the head's classifier sees)
MIXED = {
    "CLIP-ReID prompts and image-to-text loss on fast-reid ResNet-IBN": ("CLIPReID", "fastreid_resnet_ibn", STAGE1_TWICE),
    "CLIP-ReID prompts and image-to-text loss on OSNet": ("CLIPReID", "osnet", STAGE1_TWICE),
    "fast-reid SBS head on CLIP ModifiedResNet": ("Baseline", "clip_modified_resnet", SBS_HEAD),
    "fast-reid SBS head on CLIP ViT": ("Baseline", "clip_vit", SBS_HEAD),
}


@pytest.mark.parametrize("case", list(MIXED))
def test_issue17_mixed_combinations_train(case, data_root, tmp_path):
    meta, backbone, extra = MIXED[case]
    torch.manual_seed(0)
    cfg = _cfg(meta, backbone, data_root, str(tmp_path), *extra)
    run = run_training(cfg)
    assert run["results"]["SyntheticReID"]["num_valid_query"] > 0
    losses = {k for line in open(tmp_path / "metrics.json") for k in json.loads(line) if k.startswith("loss")}
    assert "loss_cls" in losses and "loss_triplet" in losses
    assert ("loss_i2t" in losses) == (meta == "CLIPReID")
    assert_trained(str(tmp_path), modules=["backbone"])
    model = run["trainer"].model
    kinds = {type(m).__name__ for m in model.backbone.modules()}
    assert {"fastreid_resnet_ibn": "IBN", "osnet": "OSNetBackbone", "clip_modified_resnet": "CLIPImageEncoder",
            "clip_vit": "CLIPImageEncoder"}[backbone] in kinds
    if meta == "CLIPReID":
        # a host backbone has no CLIP projection: CLIP-ReID learns one onto the text tower's width
        assert model.image_proj is not None and model.has_text_features()
        assert model.proj_dim == model.text_head.out_dim
        # the prompt phase ran and trained the learned tokens
        assert_trained(str(tmp_path), phase="stage1", loss=("total_loss", "loss_supcon_i2t"),
                       modules=["text_head.prompt_learner"])
    else:
        head = model.heads
        assert type(head.pool_layer).__name__ == "GeneralizedMeanPoolingP"
        assert type(head.cls_layer).__name__ == "CircleSoftmax"


# (meta-architecture, backbone, the override that makes the combination impossible, the message)
IMPOSSIBLE = {
    "text head under a feature meta-architecture": (
        "Baseline", "torchvision_resnet", ["MODEL.HEADS.NAME", "PromptLearnerHead"],
        r"MODEL.HEADS.NAME 'PromptLearnerHead' is a 'text' head, but Baseline needs a 'feature' head"),
    "feature head as CLIP-ReID's text head": (
        "CLIPReID", "clip_vit", ["CLIPREID.PROMPT.HEAD_NAME", "EmbeddingHead"],
        r"CLIPREID.PROMPT.HEAD_NAME 'EmbeddingHead' is a 'feature' head, but CLIPReID needs a 'text' head"),
    "projection of another width than the text tower's": (
        "CLIPReID", "torchvision_resnet", ["CLIPREID.PROJ_DIM", "100"],
        r"PROJ_DIM is 100, but CLIPReID compares .* text features of width 64"),
    "prompt phase on a model that learns no prompts": (
        "Baseline", "torchvision_resnet", ["TRAINER.HOOKS", "['CLIPReIDStage1Hook']"],
        r"CLIPReIDStage1Hook, but the model Baseline .* lacks encode_image_for_stage1, stage1_parameters, "
        r"stage1_losses"),
    # MGN cuts a ResNet's layer3 after its first block and re-strides layer4; a CLIP tower has no such
    # layout (a 3-conv stem, anti-aliased average-pool strides, or no layers at all for a ViT)
    "MGN on a CLIP ModifiedResNet tower": (
        "MGN", "clip_modified_resnet", [],
        r"MGN cuts a ResNet-layout backbone \(build_resnet_backbone\); CLIPImageEncoder has no conv1"),
    "MGN on a CLIP ViT tower": (
        "MGN", "clip_vit", [],
        r"MGN cuts a ResNet-layout backbone \(build_resnet_backbone\); CLIPImageEncoder has no conv1"),
}


@pytest.mark.parametrize("case", list(IMPOSSIBLE))
def test_impossible_combinations_fail_when_built_saying_why(case, data_root, tmp_path):
    meta, backbone, override, message = IMPOSSIBLE[case]
    cfg = _cfg(meta, backbone, data_root, str(tmp_path), *override)
    with pytest.raises(ConfigError, match=message):
        run_training(cfg)
