"""ID and triplet losses vs values computed by hand (scalar Python arithmetic)."""

import math

import pytest
import torch

from clipreid_plugin.config import get_cfg
from clipreid_plugin.modeling.losses import (CrossEntropyLoss, TripletLoss, triplet_loss,
                                             cross_entropy_label_smooth)


def test_label_smoothed_ce_on_2x3_example():
    """Label smoothing 0.1 on two rows (values written out below); epsilon 0 is plain cross-entropy."""
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
    """The module sums the smoothed CE of every classifier (each averaged over the batch) and scales it.

    Per row, loss = sum_k q_k (lse - z_k) with q = 0.9 onehot + 0.1 / 3, lse = log sum_k e^z_k:
    classifier a: [1, 2, 3] -> 2 gives 0.507606 (the example above), [0, 0, 0] gives log 3 =
    1.098612; mean 0.803109.
    classifier b: [0.5, -1, 0] -> 2: lse = log(e^0.5 + e^-1 + 1) = log 3.016600 = 1.104131, loss =
    (0.1/3) (0.604131 + 2.104131) + (0.9 + 0.1/3) 1.104131 = 0.090275 + 1.030522 = 1.120797;
    [2, 1, 0] -> 0 is [1, 2, 3] -> 2 shifted and permuted (lse - z_k unchanged): 0.507606; mean 0.814202.
    total = 0.25 x (0.803109 + 0.814202) = 0.25 x 1.617311 = 0.404328.
    """
    cfg = get_cfg()
    cfg.MODEL.LOSSES.CE.EPSILON = 0.1
    cfg.MODEL.LOSSES.CE.SCALE = 0.25
    a = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[0.5, -1.0, 0.0], [2.0, 1.0, 0.0]])
    t = torch.tensor([2, 0])
    out = CrossEntropyLoss(cfg)({"cls_outputs": [a, b]}, t)
    assert list(out) == ["loss_cls"]
    assert out["loss_cls"].item() == pytest.approx(0.404328, abs=2e-6)


# Four 2-D points: ids 0, 0, 1, 1.  Pairwise distances: d01 = 2, d23 = 3 (positives),
# d02 = 1, d03 = sqrt(10), d12 = sqrt(5), d13 = sqrt(2) (negatives).
POINTS = torch.tensor([[0.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 3.0]])
IDS = torch.tensor([0, 0, 1, 1])
R2 = math.sqrt(2)
# hardest (positive, negative) per anchor: (2, 1), (2, sqrt2), (3, 1), (3, sqrt2)
HARD = [(2.0, 1.0), (2.0, R2), (3.0, 1.0), (3.0, R2)]


def test_batch_hard_triplet_on_four_points():
    """Hinge and soft-margin batch-hard triplet on the four points above; zero when ids are far apart."""
    expected = (9.2 - 2 * R2) / 4  # sum of (ap - an + 0.3) = 1.3 + (2.3 - sqrt2) + 2.3 + (3.3 - sqrt2)
    assert expected == pytest.approx(sum(ap - an + 0.3 for ap, an in HARD) / 4)
    assert triplet_loss(POINTS, IDS, 0.3).item() == pytest.approx(expected, abs=1e-6)
    # a margin of 0 with well separated ids gives zero: shift id 1 far away
    far = POINTS + torch.tensor([[0.0, 0.0], [0.0, 0.0], [100.0, 0.0], [100.0, 0.0]])
    assert triplet_loss(far, IDS, 0.3).item() == 0.0
    soft = sum(math.log1p(math.exp(ap - an)) for ap, an in HARD) / 4
    assert triplet_loss(POINTS, IDS, 0.3, soft_margin=True).item() == pytest.approx(soft, abs=1e-6)


def test_triplet_norm_feat_uses_cosine_distance_by_hand():
    """norm_feat=True: fast-reid's cosine distance 2 - 2 cos (not its square root).

    u0 = (1, 0), u1 = (0, 1), u2 = (1, 1) / sqrt2, u3 = (-1, 0); ids 0, 0, 1, 1.
    d01 = d13 = 2, d02 = d12 = 2 - sqrt2 = 0.585786, d03 = 4, d23 = 2 + sqrt2 = 3.414214.
    Hardest positive - hardest negative + 0.3 per anchor:
    0: 2 - 0.585786 + 0.3 = 1.714214; 1: the same; 2: 3.414214 - 0.585786 + 0.3 = 3.128427;
    3: 3.414214 - 2 + 0.3 = 1.714214. Mean = 8.271068 / 4 = 2.067767.
    """
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    ids = torch.tensor([0, 0, 1, 1])
    assert triplet_loss(feats, ids, 0.3, norm_feat=True).item() == pytest.approx(2.067767, abs=2e-6)
    # without normalisation the raw distances differ (d23 = sqrt(5) = 2.236068, d02 = 1, ...)
    assert triplet_loss(feats, ids, 0.3).item() != pytest.approx(2.067767, abs=1e-3)


def test_triplet_module_sums_feature_lists_and_scales():
    """The module sums the loss over its feature lists and scales it."""
    cfg = get_cfg()
    cfg.MODEL.LOSSES.TRI.MARGIN = 0.3
    cfg.MODEL.LOSSES.TRI.SCALE = 2.0
    out = TripletLoss(cfg)({"triplet_features": [POINTS, POINTS * 2]}, IDS)
    # doubling every distance: per anchor 2(ap - an) + 0.3
    doubled = sum(2 * (ap - an) + 0.3 for ap, an in HARD) / 4
    assert list(out) == ["loss_triplet"]
    assert out["loss_triplet"].item() == pytest.approx(2.0 * ((9.2 - 2 * R2) / 4 + doubled), abs=1e-5)
