"""MGN: branches, stripes, fast-reid's loss composition and module names, the build-time size check, training."""

import pytest
import torch

from clipreid_plugin.config import ConfigError, get_cfg
from clipreid_plugin.modeling import build_model
from clipreid_plugin.modeling.backbones import build_backbone
from clipreid_plugin.modeling.losses import fastreid_cross_entropy, triplet_loss
from clipreid_plugin.modeling.meta_arch import MGN

IDS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def _cfg(height=96, last_stride=1):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "MGN"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    cfg.MODEL.BACKBONE.LAST_STRIDE = last_stride
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    cfg.MODEL.HEADS.EMBEDDING_DIM = 16
    cfg.MODEL.HEADS.POOL_LAYER = "GeneralizedMeanPoolingP"
    cfg.MODEL.HEADS.NECK_FEAT = "after"
    cfg.MODEL.LOSSES.CE.CONVENTION = "fastreid"
    cfg.MODEL.LOSSES.TRI.MARGIN = 0.0
    cfg.INPUT.SIZE_TRAIN = [height, 32]
    cfg.INPUT.SIZE_TEST = [height, 32]
    return cfg


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(8, 3, 96, 32, generator=g), "targets": IDS}


def test_branches_stripes_and_names():
    torch.manual_seed(0)
    model = build_model(_cfg(last_stride=2))
    assert [n for n, _ in model.named_children()] == ["backbone", "b1", "b1_head", "b2", "b2_head", "b21_head",
                                                      "b22_head", "b3", "b3_head", "b31_head", "b32_head", "b33_head",
                                                      "losses"]
    keys = model.state_dict().keys()
    # fast-reid's MGN names: the trunk as a Sequential (layer3[0] at index 6), branches = (layer3[1:], layer4)
    assert {"backbone.0.weight", "backbone.6.conv1.weight", "b1.0.0.conv1.weight", "b2.1.0.downsample.0.weight",
            "b33_head.weight", "b33_head.bottleneck.0.weight", "b33_head.pool_layer.p"} <= set(keys)
    maps = model.branch_maps(_batch()["images"])
    # 96 rows -> 6 after layer3; the global branch keeps LAST_STRIDE 2, the part branches stride 1
    assert maps["b1"].shape[2] == 3 and maps["b2"].shape[2] == 6 and maps["b3"].shape[2] == 6
    assert torch.equal(torch.cat([maps["b21"], maps["b22"]], 2), maps["b2"])
    assert [maps[n].shape[2] for n in ("b31", "b32", "b33")] == [2, 2, 2]
    # the part branches start as copies of layer4 (same weights), the strides aside
    assert torch.equal(model.b2[1][0].conv1.weight, model.b1[1][0].conv1.weight)
    assert model.b1[1][0].conv1.stride == (2, 2) and model.b2[1][0].conv1.stride == (1, 1)


def test_loss_composition_and_eval_feature():
    """CE x 1/8 on each head, soft-margin triplet x 0.2 on b1, b2, b3, cat(b21, b22), cat(b31, b32, b33)."""
    torch.manual_seed(0)
    model = build_model(_cfg()).train()
    batch = _batch()
    outputs, targets = model.training_outputs(batch)
    losses = model.losses_of(outputs, targets)
    heads = ["b1", "b2", "b21", "b22", "b3", "b31", "b32", "b33"]
    assert list(losses) == [f"loss_cls_{h}" for h in heads] + [f"loss_triplet_{g}" for g in
                                                               ("b1", "b2", "b3", "b22", "b33")]
    for h in heads:
        expected = fastreid_cross_entropy(outputs[h]["cls_outputs"][0], IDS, 0.1) * 0.125
        assert losses[f"loss_cls_{h}"].item() == pytest.approx(expected.item(), rel=1e-6)
    feat = {h: outputs[h]["neck_feat"] for h in heads}  # NECK_FEAT after
    for group, parts in [("b1", ["b1"]), ("b22", ["b21", "b22"]), ("b33", ["b31", "b32", "b33"])]:
        expected = triplet_loss(torch.cat([feat[p] for p in parts], 1), IDS, 0.0) * 0.2
        assert losses[f"loss_triplet_{group}"].item() == pytest.approx(expected.item(), rel=1e-6)
    model.eval()
    with torch.no_grad():
        emb = model(batch)
        maps = model.branch_maps(batch["images"])
        expected = torch.cat([getattr(model, f"{h}_head")(maps[h]) for h in
                              ("b1", "b2", "b3", "b21", "b22", "b31", "b32", "b33")], 1)
    assert emb.shape == (8, 8 * 16) and torch.equal(emb, expected)


def test_input_size_that_cannot_be_striped_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^MGN: INPUT size 64x32 gives a 4-row part feature map, which cannot be "
                                          r"cut into 2 and 3 stripes"):
        build_model(_cfg(height=64))


def test_mgn_rejects_a_loss_it_cannot_compose():
    """A loss that declares no ``reads`` list (e.g. the plugin's image-to-text loss) fails at build."""
    class Other(torch.nn.Module):
        def forward(self, outputs, targets):
            return {}

    with pytest.raises(ConfigError, match="MGN composes losses per branch and cannot use Other"):
        MGN(backbone=build_backbone(_cfg()), head_factory=lambda dim: torch.nn.Identity(),
            losses=torch.nn.ModuleList([Other()]))


def test_mgn_trains():
    torch.manual_seed(0)
    model = build_model(_cfg()).train()
    batch = _batch()
    before = model.b3_head.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    totals = []
    for _ in range(4):
        total = sum(model(batch).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert not torch.equal(model.b3_head.weight, before)
    assert totals[-1] < totals[0]
