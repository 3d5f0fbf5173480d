"""ID and triplet losses vs values computed by hand (scalar Python arithmetic)."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipreid_plugin.config import get_cfg
from clipreid_plugin.modeling.losses import (CrossEntropyLoss, TripletLoss, batch_hard_triplet_loss,
                                             cross_entropy_label_smooth)


def _smoothed_ce_by_hand(row, target, eps):
    """-sum_k q_k log p_k with q = (1 - eps) onehot + eps / C, p = softmax(row)."""
    lse = math.log(sum(math.exp(z) for z in row))
    c = len(row)
    return -sum(((1 - eps) * (k == target) + eps / c) * (z - lse) for k, z in enumerate(row))


def test_label_smoothed_ce_on_2x3_example():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([2, 0])
    # row 1: log-sum-exp = 3 + log(1 + e^-1 + e^-2); row 2: uniform, so the loss is log 3 for any target
    lse = 3 + math.log(1 + math.exp(-1) + math.exp(-2))
    row1 = (0.1 / 3) * ((lse - 1) + (lse - 2)) + (0.9 + 0.1 / 3) * (lse - 3)
    expected = (row1 + math.log(3)) / 2
    assert abs(expected - 0.80311) < 1e-5  # 0.5 * (0.50761 + 1.09861)
    assert cross_entropy_label_smooth(logits, targets, 0.1).item() == pytest.approx(expected, abs=1e-7)
    # epsilon 0 is plain cross-entropy
    plain = (lse - 3 + math.log(3)) / 2
    assert cross_entropy_label_smooth(logits, targets, 0.0).item() == pytest.approx(plain, abs=1e-7)


def test_cross_entropy_module_sums_classifiers_and_scales():
    cfg = get_cfg()
    cfg.MODEL.LOSSES.CE.EPSILON = 0.1
    cfg.MODEL.LOSSES.CE.SCALE = 0.25
    a = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[0.5, -1.0, 0.0], [2.0, 1.0, 0.0]])
    t = torch.tensor([2, 0])
    out = CrossEntropyLoss(cfg)({"cls_outputs": [a, b]}, t)
    by_hand = sum(_smoothed_ce_by_hand(z.tolist()[i], t[i].item(), 0.1) for z in (a, b) for i in range(2)) / 2
    assert list(out) == ["loss_cls"]
    assert out["loss_cls"].item() == pytest.approx(0.25 * by_hand, abs=1e-6)


# Four 2-D points: ids 0, 0, 1, 1.  Pairwise distances: d01 = 2, d23 = 3 (positives),
# d02 = 1, d03 = sqrt(10), d12 = sqrt(5), d13 = sqrt(2) (negatives).
POINTS = torch.tensor([[0.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 3.0]])
IDS = torch.tensor([0, 0, 1, 1])
R2 = math.sqrt(2)
# hardest (positive, negative) per anchor: (2, 1), (2, sqrt2), (3, 1), (3, sqrt2)
HARD = [(2.0, 1.0), (2.0, R2), (3.0, 1.0), (3.0, R2)]


def test_batch_hard_triplet_on_four_points():
    expected = (9.2 - 2 * R2) / 4  # sum of (ap - an + 0.3) = 1.3 + (2.3 - sqrt2) + 2.3 + (3.3 - sqrt2)
    assert expected == pytest.approx(sum(ap - an + 0.3 for ap, an in HARD) / 4)
    assert batch_hard_triplet_loss(POINTS, IDS, 0.3).item() == pytest.approx(expected, abs=1e-6)
    # a margin of 0 with well separated ids gives zero: shift id 1 far away
    far = POINTS + torch.tensor([[0.0, 0.0], [0.0, 0.0], [100.0, 0.0], [100.0, 0.0]])
    assert batch_hard_triplet_loss(far, IDS, 0.3).item() == 0.0
    soft = sum(math.log1p(math.exp(ap - an)) for ap, an in HARD) / 4
    assert batch_hard_triplet_loss(POINTS, IDS, 0.3, soft_margin=True).item() == pytest.approx(soft, abs=1e-6)


def test_triplet_normalised_features_by_hand():
    # after L2 normalisation: (0,0) stays ~0 (F.normalize clamps the norm), others lie on the unit circle
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    ids = torch.tensor([0, 0, 1, 1])
    u = F.normalize(feats, dim=1).tolist()
    d = [[math.dist(u[i], u[j]) for j in range(4)] for i in range(4)]
    expected = sum(max(0.0, max(d[i][j] for j in range(4) if ids[j] == ids[i])
                       - min(d[i][j] for j in range(4) if ids[j] != ids[i]) + 0.3) for i in range(4)) / 4
    assert batch_hard_triplet_loss(feats, ids, 0.3, normalize=True).item() == pytest.approx(expected, abs=1e-6)


def test_triplet_module_sums_feature_lists_and_scales():
    cfg = get_cfg()
    cfg.MODEL.LOSSES.TRI.MARGIN = 0.3
    cfg.MODEL.LOSSES.TRI.SCALE = 2.0
    out = TripletLoss(cfg)({"triplet_features": [POINTS, POINTS * 2]}, IDS)
    # doubling every distance: per anchor 2(ap - an) + 0.3
    doubled = sum(2 * (ap - an) + 0.3 for ap, an in HARD) / 4
    assert list(out) == ["loss_triplet"]
    assert out["loss_triplet"].item() == pytest.approx(2.0 * ((9.2 - 2 * R2) / 4 + doubled), abs=1e-5)
