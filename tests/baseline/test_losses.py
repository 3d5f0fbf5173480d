"""ID and triplet losses vs values computed by hand (scalar Python arithmetic)."""

import math

import pytest
import torch

from clipreid_plugin.config import get_cfg
from clipreid_plugin.modeling.losses import (CrossEntropyLoss, TripletLoss, triplet_loss,
                                             cross_entropy_label_smooth)


def test_label_smoothed_ce_on_2x3_example():
    """Label smoothing 0.1 on two rows; epsilon 0 is plain cross-entropy.

    Per row, loss = sum_k q_k (lse - z_k) with q = 0.9 onehot + 0.1 / 3 and lse = log sum_k e^z_k.
    Row [1, 2, 3], target 2: lse = 3 + log(1 + e^-1 + e^-2) = 3 + log 1.503215 = 3.407606, so
    lse - z = (2.407606, 1.407606, 0.407606) and the loss is (0.1/3)(2.407606 + 1.407606)
    + (0.9 + 0.1/3) 0.407606 = 0.127174 + 0.380432 = 0.507606.
    Row [0, 0, 0], target 0: every lse - z_k is log 3 = 1.098612, and so is the loss.
    Batch mean: (0.507606 + 1.098612) / 2 = 0.803109.
    Epsilon 0: the target's lse - z alone, (0.407606 + 1.098612) / 2 = 0.753109.
    """
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([2, 0])
    assert cross_entropy_label_smooth(logits, targets, 0.1).item() == pytest.approx(0.803109, abs=1e-6)
    assert cross_entropy_label_smooth(logits, targets, 0.0).item() == pytest.approx(0.753109, abs=1e-6)


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
    """Hinge and soft-margin batch-hard triplet on the four points above (margin 0.3).

    Hinge, ap - an + 0.3 per anchor: 2 - 1 + 0.3 = 1.3; 2 - 1.414214 + 0.3 = 0.885786;
    3 - 1 + 0.3 = 2.3; 3 - 1.414214 + 0.3 = 1.885786; mean 6.371573 / 4 = 1.592893.
    Soft margin, log(1 + e^(ap - an)): log(1 + e) = 1.313262; log(1 + e^0.585786) = log 2.796402 =
    1.028334; log(1 + e^2) = 2.126928; log(1 + e^1.585786) = log 5.883128 = 1.772089;
    mean 6.240613 / 4 = 1.560153.
    """
    assert triplet_loss(POINTS, IDS, 0.3).item() == pytest.approx(1.592893, abs=1e-6)
    # id 1 moved 100 to the right: every hardest negative (about 100 away) is farther than the
    # hardest positive (2 or 3) plus the margin 0.3, so every hinge is 0
    far = POINTS + torch.tensor([[0.0, 0.0], [0.0, 0.0], [100.0, 0.0], [100.0, 0.0]])
    assert triplet_loss(far, IDS, 0.3).item() == 0.0
    assert triplet_loss(POINTS, IDS, 0.3, soft_margin=True).item() == pytest.approx(1.560153, abs=1e-6)


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
    # without normalisation, the raw distances: d01 = d13 = sqrt2, d02 = d12 = 1, d03 = 2,
    # d23 = sqrt5 = 2.236068; per anchor 1.414214 - 1 + 0.3 = 0.714214 (anchors 0 and 1),
    # 2.236068 - 1 + 0.3 = 1.536068, 2.236068 - 1.414214 + 0.3 = 1.121854; mean 4.086350 / 4 = 1.021587
    assert triplet_loss(feats, ids, 0.3).item() == pytest.approx(1.021587, abs=2e-6)


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
