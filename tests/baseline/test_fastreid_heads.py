"""fast-reid's head pieces against hand-computed values: pooling layers, classifier layers, EmbeddingHead."""

import math

import pytest
import torch

from clipreid_plugin.config import ConfigError, get_cfg
from clipreid_plugin.modeling.heads import EmbeddingHead, build_cls_layer, build_heads, build_pool_layer

# one image, two channels, a 2x2 map
MAP = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [0.5, 0.5]]]])


@pytest.mark.parametrize("name, expected", [
    ("GlobalAvgPool", [2.5, 0.0]),
    ("avg", [2.5, 0.0]),
    ("FastGlobalAvgPool", [2.5, 0.0]),
    ("GlobalMaxPool", [4.0, 0.5]),
    ("max", [4.0, 0.5]),
    ("AdaptiveAvgMaxPool", [6.5, 0.5]),
    ("ClipGlobalAvgPool", [1.0, 0.0]),
    # GeM p = 3 with negatives clamped to 1e-6: ((1+8+27+64)/4)^(1/3) = 25^(1/3); (2 * 0.125 / 4)^(1/3) = 0.396850
    ("GeneralizedMeanPooling", [25 ** (1 / 3), (0.25 / 4 + 2e-18 / 4) ** (1 / 3)]),
    ("gem", [25 ** (1 / 3), (0.25 / 4 + 2e-18 / 4) ** (1 / 3)]),
    ("GeneralizedMeanPoolingP", [25 ** (1 / 3), (0.25 / 4 + 2e-18 / 4) ** (1 / 3)]),
])
def test_pool_layers_by_hand(name, expected):
    out = build_pool_layer(name)(MAP)
    assert out.shape == (1, 2, 1, 1)
    torch.testing.assert_close(out.flatten(), torch.tensor(expected), rtol=0, atol=1e-5)


def test_identity_flatten_and_learnable_p():
    assert torch.equal(build_pool_layer("Identity")(MAP[:, :, :1, :1]), MAP[:, :, :1, :1])
    assert torch.equal(build_pool_layer("Flatten")(MAP).flatten(), MAP.flatten())
    gem = build_pool_layer("GeneralizedMeanPoolingP")
    assert [n for n, _ in gem.named_parameters()] == ["p"] and gem.p.item() == 3.0
    gem(MAP).sum().backward()

    def dgem_dp(values, p=3.0):
        """d/dp of (mean x^p)^(1/p) = m^(1/p) (mean(x^p ln x) / (p m) - ln m / p^2), x clamped to 1e-6."""
        xs = [max(v, 1e-6) for v in values]
        m = sum(x ** p for x in xs) / len(xs)
        return m ** (1 / p) * (sum(x ** p * math.log(x) for x in xs) / len(xs) / (p * m) - math.log(m) / p ** 2)

    expected = dgem_dp([1.0, 2.0, 3.0, 4.0]) + dgem_dp([-1.0, 0.0, 0.5, 0.5])
    assert gem.p.grad.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="MODEL.HEADS.POOL_LAYER 'Median' is not a pooling layer"):
        build_pool_layer("Median")


# raw cosines of 2 samples x 3 classes, targets 1 and 0
COS = torch.tensor([[0.2, 0.6, -0.4], [0.9, 0.1, 0.0]])
TARGETS = torch.tensor([1, 0])


def test_classifier_layers_by_hand():
    s, m = 10.0, 0.3
    linear = build_cls_layer("Linear", s, m)(COS, TARGETS)
    torch.testing.assert_close(linear, COS * 10)
    cos = build_cls_layer("CosSoftmax", s, m)(COS, TARGETS)
    torch.testing.assert_close(cos, torch.tensor([[2.0, 3.0, -4.0], [6.0, 1.0, 0.0]]), rtol=0, atol=1e-5)
    arc = build_cls_layer("ArcSoftmax", s, m)(COS, TARGETS)
    expected = [[2.0, 10 * math.cos(math.acos(0.6) + 0.3), -4.0], [10 * math.cos(math.acos(0.9) + 0.3), 1.0, 0.0]]
    torch.testing.assert_close(arc, torch.tensor(expected), rtol=0, atol=1e-5)
    circle = build_cls_layer("CircleSoftmax", s, m)(COS, TARGETS)
    # target: s * max(1 + m - z, 0) * (z - (1 - m)); others: s * max(z + m, 0) * (z - m)
    expected = [[10 * 0.5 * (0.2 - 0.3), 10 * 0.7 * (0.6 - 0.7), 10 * 0.0 * (-0.7)],
                [10 * 0.4 * (0.9 - 0.7), 10 * 0.4 * (0.1 - 0.3), 10 * 0.3 * (-0.3)]]
    torch.testing.assert_close(circle, torch.tensor(expected), rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="MODEL.HEADS.CLS_LAYER 'AmSoftmax'"):
        build_cls_layer("AmSoftmax", s, m)


def test_circle_softmax_weights_are_constants():
    """The self-paced weights carry no gradient: d/dz of s a_p (z - (1-m)) is s a_p."""
    z = COS.clone().requires_grad_(True)
    build_cls_layer("CircleSoftmax", 10.0, 0.3)(z, TARGETS)[0, 1].backward()
    assert z.grad[0, 1].item() == pytest.approx(10 * 0.7) and z.grad.abs().sum().item() == pytest.approx(7.0)


def _fill_head(head: EmbeddingHead) -> EmbeddingHead:
    with torch.no_grad():
        if len(head.bottleneck) and isinstance(head.bottleneck[0], torch.nn.Conv2d):
            head.bottleneck[0].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]]).view(3, 2, 1, 1))
        head.weight.copy_(torch.arange(head.weight.numel(), dtype=torch.float32).view_as(head.weight) / 10)
    return head


def test_embedding_head_layout_and_features_by_hand():
    """Pool -> 1x1 conv embedding -> BNNeck (bias frozen) -> Linear classifier, fast-reid names."""
    head = _fill_head(EmbeddingHead(in_dim=2, num_classes=2, pool_layer="GlobalAvgPool", embedding_dim=3,
                                    neck_feat="before"))
    # fast-reid's names and order (the head's own class weights first, as its state dicts list them)
    assert [n for n, _ in head.named_parameters()] == ["weight", "bottleneck.0.weight", "bottleneck.1.weight",
                                                      "bottleneck.1.bias"]
    assert not head.bottleneck[1].bias.requires_grad
    maps = torch.stack([MAP[0], MAP[0] * 2])  # pooled: (2.5, 0) and (5, 0)
    out = head.train()(maps, targets=torch.tensor([0, 1]))
    torch.testing.assert_close(out["pool_feat"], torch.tensor([[2.5, 0.0], [5.0, 0.0]]))
    # embedded: (2.5, 2.5, 0), (5, 5, 0); train BN: (x - mean) / sqrt(var + 1e-5), var biased
    z = 1.25 / math.sqrt(1.25 ** 2 + 1e-5)
    neck = torch.tensor([[-z, -z, 0.0], [z, z, 0.0]])
    torch.testing.assert_close(out["neck_feat"], neck, rtol=0, atol=1e-6)
    assert out["triplet_features"][0] is out["pool_feat"]  # NECK_FEAT before: the pooled feature
    logits = neck @ head.weight.detach().t()
    torch.testing.assert_close(out["cls_outputs"][0], logits)
    torch.testing.assert_close(out["pred_class_logits"], logits)
    head.eval()
    with torch.no_grad():
        emb = head(maps)
    # eval: running stats after one update: mean 0.1 * batch mean, var 0.9 + 0.1 * unbiased var
    mean, var = 0.1 * 3.75, 0.9 + 0.1 * (2 * 1.25 ** 2)
    expected = torch.tensor([[2.5, 2.5, 0.0], [5.0, 5.0, 0.0]])
    expected[:, :2] = (expected[:, :2] - mean) / math.sqrt(var + 1e-5)
    expected[:, 2] = 0.0 / math.sqrt(0.9 + 1e-5)
    torch.testing.assert_close(emb, expected, rtol=0, atol=1e-5)


def test_neck_feat_after_and_eval_feat_before():
    head = _fill_head(EmbeddingHead(in_dim=2, num_classes=2, neck_feat="after", eval_feat="before"))
    maps = torch.stack([MAP[0], MAP[0] * 2])
    out = head.train()(maps, targets=torch.tensor([0, 1]))
    assert out["triplet_features"][0] is out["neck_feat"]
    with torch.no_grad():
        assert torch.equal(head.eval()(maps), torch.tensor([[2.5, 0.0], [5.0, 0.0]]))


def test_cosine_classifier_normalises_feature_and_weights():
    head = _fill_head(EmbeddingHead(in_dim=2, num_classes=2, with_bnneck=False, cls_layer="CosSoftmax", scale=4.0,
                                    margin=0.5))
    assert len(head.bottleneck) == 0
    maps = torch.stack([MAP[0], -MAP[0]])  # pooled (2.5, 0), (-2.5, 0)
    out = head.train()(maps, targets=torch.tensor([1, 0]))
    w = torch.nn.functional.normalize(head.weight.detach())  # rows (0, 1) and (0.5547, 0.8321)
    cos = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]) @ w.t()
    torch.testing.assert_close(out["pred_class_logits"], 4 * cos)
    torch.testing.assert_close(out["cls_outputs"][0], 4 * (cos - torch.tensor([[0.0, 0.5], [0.5, 0.0]])))


def test_head_from_config_and_errors():
    cfg = get_cfg()
    cfg.MODEL.HEADS.NUM_CLASSES = 5
    cfg.MODEL.HEADS.POOL_LAYER = "GeneralizedMeanPoolingP"
    cfg.MODEL.HEADS.EMBEDDING_DIM = 8
    cfg.MODEL.HEADS.CLS_LAYER = "CircleSoftmax"
    cfg.MODEL.HEADS.SCALE, cfg.MODEL.HEADS.MARGIN = 64.0, 0.35
    head = build_heads(cfg, 16)
    assert head.out_dim == 8 and head.weight.shape == (5, 8) and head.cls_layer.s == 64.0
    assert type(head.pool_layer).__name__ == "GeneralizedMeanPoolingP"
    for key, value, message in [("NECK_FEAT", "middle", "MODEL.HEADS.NECK_FEAT must be"),
                                ("EVAL_FEAT", "pool", "MODEL.HEADS.EVAL_FEAT must be"),
                                ("EMBEDDING_DIM", -1, "MODEL.HEADS.EMBEDDING_DIM must be >= 0")]:
        bad = cfg.clone()
        setattr(bad.MODEL.HEADS, key, value)
        with pytest.raises(ConfigError, match=message):
            build_heads(bad, 16)
