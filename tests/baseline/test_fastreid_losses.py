"""fast-reid's losses against values computed by hand (plain Python, independent of the torch code)."""

import math

import pytest
import torch

from clipreid_plugin.config import ConfigError, get_cfg
from clipreid_plugin.modeling.losses import (CircleLoss, Cosface, CrossEntropyLoss, TripletLoss, build_losses,
                                             fastreid_cross_entropy, pairwise_circle_loss, pairwise_cosface_loss,
                                             triplet_loss)


def _log_softmax(row):
    lse = math.log(sum(math.exp(v) for v in row))
    return [v - lse for v in row]


LOGITS = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]
LABELS = [0, 2]


def test_fastreid_cross_entropy_targets_and_normalisation_by_hand():
    """Target 1 - eps on the true class, eps / (C - 1) on the others; sum / non-zero count (= batch here)."""
    eps = 0.1
    per_sample = [-sum(((1 - eps) if k == y else eps / 2) * lp for k, lp in enumerate(_log_softmax(z)))
                  for z, y in zip(LOGITS, LABELS)]
    ours = fastreid_cross_entropy(torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(LABELS), eps)
    assert ours.item() == pytest.approx(sum(per_sample) / 2, abs=1e-12)
    # the uniform convention differs: (1 - eps) onehot + eps / C
    uniform = CrossEntropyLoss(epsilon=eps)({"cls_outputs": [torch.tensor(LOGITS, dtype=torch.float64)]},
                                            torch.tensor(LABELS))["loss_cls"]
    by_hand = sum(-sum(((1 - eps) * (k == y) + eps / 3) * lp for k, lp in enumerate(_log_softmax(z)))
                  for z, y in zip(LOGITS, LABELS)) / 2
    assert uniform.item() == pytest.approx(by_hand, abs=1e-12) and abs(uniform.item() - ours.item()) > 1e-3


def test_fastreid_cross_entropy_divides_by_the_non_zero_losses():
    """A sample whose loss is exactly 0 (float32: a certain prediction, eps 0) is not counted."""
    logits = torch.tensor([[200.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    loss = fastreid_cross_entropy(logits, torch.tensor([0, 1]), 0.0)
    assert loss.item() == pytest.approx(math.log(3), rel=1e-6)  # log 3 / 1, not / 2


def test_adaptive_label_smoothing_by_hand():
    """eps < 0: eps_i = alpha * p_i(target), a constant; logits (1, 0, 0), target 0, alpha 0.2."""
    p = math.e / (math.e + 2)
    s = 0.2 * p
    lp = _log_softmax([1.0, 0.0, 0.0])
    expected = -((1 - s) * lp[0] + s / 2 * lp[1] + s / 2 * lp[2])
    logits = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    loss = fastreid_cross_entropy(logits, torch.tensor([0]), -1.0, alpha=0.2)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    # the smoothing is a constant: d/dz_k = softmax_k - target_k
    probs = [math.exp(v) for v in lp]
    target = [1 - s, s / 2, s / 2]
    torch.testing.assert_close(logits.grad[0], torch.tensor([a - b for a, b in zip(probs, target)],
                                                            dtype=torch.float64))
    with pytest.raises(ConfigError, match="exists only with MODEL.LOSSES.CE.CONVENTION 'fastreid'"):
        CrossEntropyLoss(epsilon=-1.0)
    with pytest.raises(ConfigError, match="MODEL.LOSSES.CE.CONVENTION must be one of"):
        CrossEntropyLoss(convention="torchreid")


# 1-D features (as 2-D points on a line), ids 0, 0, 1, 1
POINTS = [[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.5, 0.0]]
IDS = [0, 0, 1, 1]


def _dist(a, b):
    return math.dist(a, b)


def _softmax_weighted(values, mask):
    """fast-reid's softmax_weights then the weighted sum: the shift is the row max of value * mask
    (0 for the masked-out entries), and 1e-6 is added to the normaliser."""
    shift = max(v * m for v, m in zip(values, mask))
    e = [math.exp(v - shift) * m for v, m in zip(values, mask)]
    z = sum(e) + 1e-6
    return [w / z for w in e]


def _weighted(i):
    """Softmax-weighted positive / negative distance of anchor i (fast-reid's weighted mining)."""
    d = [_dist(POINTS[i], POINTS[j]) for j in range(4)]
    pos = [1.0 if IDS[j] == IDS[i] else 0.0 for j in range(4)]
    neg = [1.0 - p for p in pos]
    d = [max(x, 1e-6) for x in d]  # the self distance: sqrt of the 1e-12 clamp
    wp = _softmax_weighted([x * p for x, p in zip(d, pos)], pos)
    wn = _softmax_weighted([-x * n for x, n in zip(d, neg)], neg)
    return (sum(x * p * w for x, p, w in zip(d, pos, wp)), sum(x * n * w for x, n, w in zip(d, neg, wn)))


def test_weighted_regularised_triplet_by_hand():
    feats, ids = torch.tensor(POINTS, dtype=torch.float64), torch.tensor(IDS)
    pairs = [_weighted(i) for i in range(4)]
    soft = sum(math.log1p(math.exp(ap - an)) for ap, an in pairs) / 4
    assert triplet_loss(feats, ids, 0.0, hard_mining=False).item() == pytest.approx(soft, abs=1e-9)
    hinge = sum(max(0.0, ap - an + 0.3) for ap, an in pairs) / 4
    assert triplet_loss(feats, ids, 0.3, hard_mining=False).item() == pytest.approx(hinge, abs=1e-9)


def test_margin_zero_is_soft_margin_with_hard_mining():
    """fast-reid's MARGIN 0: log(1 + exp(d_ap - d_an)) on the hardest pairs."""
    feats, ids = torch.tensor(POINTS, dtype=torch.float64), torch.tensor(IDS)
    hardest = [(1.0, 3.0), (1.0, 2.0), (0.5, 2.0), (0.5, 2.5)]
    soft = sum(math.log1p(math.exp(ap - an)) for ap, an in hardest) / 4
    assert triplet_loss(feats, ids, 0.0).item() == pytest.approx(soft, abs=1e-9)
    module = TripletLoss(margin=0.0, scale=2.0)
    assert module({"triplet_features": [feats]}, ids)["loss_triplet"].item() == pytest.approx(2 * soft, abs=1e-9)


def test_soft_margin_overflow_falls_back_to_the_hinge():
    """exp overflows (d_ap - d_an > 709 in float64): fast-reid replaces the loss by the hinge at margin 0.3."""
    feats = torch.tensor([[0.0, 0.0], [1000.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    ids = torch.tensor(IDS)
    # hardest pairs: anchor 0 (1000, 1), 1 (1000, 998), 2 (1, 1), 3 (1, 2)
    hinge = (max(0, 1000 - 1 + 0.3) + max(0, 1000 - 998 + 0.3) + 0.3 + 0.0) / 4
    assert triplet_loss(feats, ids, 0.0).item() == pytest.approx(hinge, abs=1e-9)


def _cosines():
    unit = [[x / math.hypot(*p) for x in p] for p in [[1.0, 0.2], [0.8, 0.6], [-0.3, 1.0], [0.1, 0.9]]]
    return unit, [[sum(a * b for a, b in zip(u, v)) for v in unit] for u in unit]


def _softplus_of_lse(pos_logits, neg_logits):
    lse = lambda xs: math.log(sum(math.exp(x) for x in xs))  # noqa: E731
    return math.log1p(math.exp(lse(pos_logits) + lse(neg_logits)))


def test_pairwise_circle_and_cosface_by_hand():
    """Per anchor over positives (self excluded) and negatives, averaged; m 0.25, gamma 8 (small, readable)."""
    unit, sim = _cosines()
    feats = torch.tensor([[1.0, 0.2], [0.8, 0.6], [-0.3, 1.0], [0.1, 0.9]], dtype=torch.float64)
    ids = torch.tensor([0, 0, 1, 1])
    m, g = 0.25, 8.0
    circle = cosface = 0.0
    for i in range(4):
        pos = [sim[i][j] for j in range(4) if j != i and IDS[j] == IDS[i]]
        neg = [sim[i][j] for j in range(4) if IDS[j] != IDS[i]]
        circle += _softplus_of_lse([-g * max(1 + m - s, 0) * (s - (1 - m)) for s in pos],
                                   [g * max(s + m, 0) * (s - m) for s in neg])
        cosface += _softplus_of_lse([-g * s for s in pos], [g * (s + m) for s in neg])
    assert pairwise_circle_loss(feats, ids, m, g).item() == pytest.approx(circle / 4, abs=1e-9)
    assert pairwise_cosface_loss(feats, ids, m, g).item() == pytest.approx(cosface / 4, abs=1e-9)
    out = CircleLoss(margin=m, gamma=g, scale=0.5)({"triplet_features": [feats]}, ids)
    assert out["loss_circle"].item() == pytest.approx(0.5 * circle / 4, abs=1e-9)
    out = Cosface(margin=m, gamma=g)({"triplet_features": [feats]}, ids)
    assert out["loss_cosface"].item() == pytest.approx(cosface / 4, abs=1e-9)


def test_losses_from_config():
    cfg = get_cfg()
    cfg.MODEL.LOSSES.NAMES = ("CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface")
    cfg.MODEL.LOSSES.CE.CONVENTION = "fastreid"
    cfg.MODEL.LOSSES.TRI.HARD_MINING = False
    cfg.MODEL.LOSSES.CIRCLE.GAMMA = 64.0
    ce, tri, circle, cosface = build_losses(cfg)
    assert ce.convention == "fastreid" and tri.hard is False and circle.gamma == 64.0 and cosface.gamma == 128.0
    assert (ce.reads, tri.reads, circle.reads, cosface.reads) == ("cls_outputs",) + ("triplet_features",) * 3
