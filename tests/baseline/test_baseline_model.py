"""Baseline meta-architecture: losses and embeddings vs hand computation, and the batch contract."""

import math
import re

import pytest
import torch
from torch import nn

from clipreid_plugin.config import get_cfg
from clipreid_plugin.modeling import BACKBONE_REGISTRY, build_model
from clipreid_plugin.modeling.backbones import Backbone, BackboneOutput
from clipreid_plugin.modeling.meta_arch import Baseline


class _IdentityBackbone(Backbone):
    """Returns the images themselves as the feature map, so features are known by hand."""

    def __init__(self, channels):
        super().__init__()
        self.out_features = channels
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, x, camids=None, viewids=None):
        return BackboneOutput(x + self.dummy)


if "build_identity_test_backbone" not in BACKBONE_REGISTRY:
    @BACKBONE_REGISTRY.register()
    def build_identity_test_backbone(cfg):
        return _IdentityBackbone(2)


# Feature of each image (a 1x1 map with 2 channels), ids 0, 0, 1, 1.
POINTS = [[0.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 3.0]]
IDS = [0, 0, 1, 1]
W = [[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]  # classifier rows, 3 classes


def _tiny_model(eval_feat="after", neck_feat="before"):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "Baseline"
    cfg.MODEL.BACKBONE.NAME = "build_identity_test_backbone"
    cfg.MODEL.HEADS.NAME = "EmbeddingHead"
    cfg.MODEL.HEADS.NUM_CLASSES = 3
    cfg.MODEL.HEADS.NECK_FEAT = neck_feat
    cfg.MODEL.HEADS.EVAL_FEAT = eval_feat
    cfg.MODEL.LOSSES.NAMES = ("CrossEntropyLoss", "TripletLoss")
    cfg.MODEL.LOSSES.CE.EPSILON = 0.1
    cfg.MODEL.LOSSES.CE.SCALE = 0.5
    cfg.MODEL.LOSSES.TRI.MARGIN = 0.3
    cfg.MODEL.LOSSES.TRI.SCALE = 1.0
    model = build_model(cfg)
    with torch.no_grad():
        model.heads.weight.copy_(torch.tensor(W))
    return model


def _batch():
    images = torch.tensor(POINTS).view(4, 2, 1, 1)
    return {"images": images, "targets": torch.tensor(IDS), "camids": torch.zeros(4, dtype=torch.long),
            "viewids": torch.zeros(4, dtype=torch.long), "img_paths": [f"{i}.jpg" for i in range(4)]}


def test_training_losses_equal_hand_computed_ce_and_triplet():
    model = _tiny_model()
    assert isinstance(model, Baseline)
    model.train()
    losses = model(_batch())
    assert sorted(losses) == ["loss_cls", "loss_triplet"]

    # BNNeck in training mode: per-channel batch mean and biased variance, eps 1e-5, weight 1, bias 0
    cols = list(zip(*POINTS))
    means = [sum(c) / 4 for c in cols]
    vars_ = [sum((v - m) ** 2 for v in c) / 4 for c, m in zip(cols, means)]
    bn = [[(p[k] - means[k]) / math.sqrt(vars_[k] + 1e-5) for k in range(2)] for p in POINTS]
    ce = 0.0
    for f, y in zip(bn, IDS):
        z = [sum(w * x for w, x in zip(row, f)) for row in W]
        lse = math.log(sum(math.exp(v) for v in z))
        ce += -sum(((0.9 if k == y else 0.0) + 0.1 / 3) * (z[k] - lse) for k in range(3))
    ce = 0.5 * ce / 4
    # triplet on the pre-BN features (the points): (9.2 - 2 sqrt 2) / 4, see test_losses.py
    tri = (9.2 - 2 * math.sqrt(2)) / 4
    assert losses["loss_cls"].item() == pytest.approx(ce, abs=1e-6)
    assert losses["loss_triplet"].item() == pytest.approx(tri, abs=1e-6)

    total = sum(losses.values())
    total.backward()
    assert model.heads.weight.grad is not None
    assert model.heads.bottleneck[0].bias.grad is None  # BNNeck bias stays frozen


@pytest.mark.parametrize("eval_feat", ["after", "before"])
def test_eval_returns_the_head_embedding(eval_feat):
    model = _tiny_model(eval_feat).eval()
    emb = model(_batch())
    feats = torch.tensor(POINTS)
    # fresh running statistics: mean 0, var 1
    expected = feats / math.sqrt(1 + 1e-5) if eval_feat == "after" else feats
    torch.testing.assert_close(emb, expected, rtol=0, atol=1e-6)


def test_resnet_baseline_follows_the_batch_contract():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    model = build_model(cfg)
    batch = {"images": torch.randn(8, 3, 64, 32), "targets": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]),
             "camids": torch.zeros(8, dtype=torch.long), "viewids": torch.zeros(8, dtype=torch.long),
             "img_paths": [""] * 8}
    losses = model.train()(batch)
    assert set(losses) == {"loss_cls", "loss_triplet"} and all(v.dim() == 0 for v in losses.values())
    with torch.no_grad():
        emb = model.eval()(batch)
    assert emb.shape == (8, 512)


def test_training_without_classes_says_what_to_set():
    model = _tiny_model()
    model.heads.weight = None  # as built with MODEL.HEADS.NUM_CLASSES = 0
    with pytest.raises(ValueError, match="MODEL.HEADS.NUM_CLASSES"):
        model.train()(_batch())


def test_side_ids_are_range_checked_on_the_host_only():
    """check_ids_in_range (both SIE backbones use it) checks host tensors; ids already on another
    device are not read back (a sync per step), nor are empty batches."""
    from clipreid_plugin.config import ConfigError
    from clipreid_plugin.modeling.backbones import check_ids_in_range

    check_ids_in_range(torch.tensor([0, 2]), 3, "camera", "fix it.")
    check_ids_in_range(torch.tensor([], dtype=torch.long), 3, "camera", "fix it.")
    check_ids_in_range(torch.tensor([7], device="meta"), 3, "camera", "fix it.")
    for bad in ([0, 3], [-1, 0]):
        message = f"A view id in the batch ({bad}) is outside 0..2: fix it."
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            check_ids_in_range(torch.tensor(bad), 3, "view", "fix it.")
