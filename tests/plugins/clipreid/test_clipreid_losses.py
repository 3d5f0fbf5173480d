"""Image-text losses against hand-computed values (no reference files needed)."""

import math

import pytest
import torch

from clipreid_plugin.config import ConfigError, get_cfg
from clipreid_plugin.modeling.losses import LOSS_REGISTRY
from clipreid_plugin.plugins.clipreid.losses import supcon_loss  # also registers the losses


def test_supcon_hand_computed():
    # anchor 0 = e1 with positives e1 and (1,1); anchor 1 = e2 with positive e2.
    # Row 0: s = [1, 0, 1], mean over positives of log p = 1 - log(2e + 1).
    # Row 1: s = [0, 1, 1], its only positive has log p = 1 - log(1 + 2e).
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    loss = supcon_loss(a, b, torch.tensor([0, 1]), torch.tensor([0, 1, 0]))
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.e) - 1, abs=1e-6)


def test_supcon_temperature_and_large_logits_are_stable():
    # Raw dot products of ~1e4 must not overflow (row max subtracted); temperature divides.
    a = torch.tensor([[100.0, 0.0]])
    b = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    loss = supcon_loss(a, b, torch.tensor([3]), torch.tensor([3, 5]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.0, abs=1e-6)
    # temperature 1e4: s = [1, 0] -> loss = log(1 + e^-1)
    loss_t = supcon_loss(a, b, torch.tensor([3]), torch.tensor([3, 5]), temperature=1e4)
    assert loss_t.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_supcon_without_positive_is_a_clear_error():
    with pytest.raises(ValueError, match="no candidate with the same label"):
        supcon_loss(torch.ones(1, 2), torch.ones(1, 2), torch.tensor([0]), torch.tensor([1]))


def test_stage1_loss_is_both_directions_scaled():
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    cfg.CLIPREID.LOSSES.SUPCON.SCALE = 2.0
    loss = LOSS_REGISTRY.get("ImageTextSupConLoss")(cfg)
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1])
    out = loss({"image_features": img, "text_features": txt}, labels)
    # image anchors: row 0 s=[2,0] -> log(1+e^-2); row 1 s=[0,0] -> log 2
    i2t = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    # text anchors: row 0 s=[2,0] -> log(1+e^-2); row 1 s=[0,0] -> log 2 (same by symmetry here)
    assert out["loss_supcon_i2t"].item() == pytest.approx(2 * i2t, abs=1e-6)
    assert out["loss_supcon_t2i"].item() == pytest.approx(2 * i2t, abs=1e-6)


def test_i2t_cross_entropy_label_smoothing_and_scale():
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    cfg.CLIPREID.LOSSES.I2T.EPSILON = 0.1
    cfg.CLIPREID.LOSSES.I2T.SCALE = 0.5
    loss = LOSS_REGISTRY.get("ImageTextCrossEntropyLoss")(cfg)
    logits = torch.tensor([[math.log(3.0), 0.0]])  # softmax = [3/4, 1/4]
    out = loss({"i2t_logits": logits}, torch.tensor([0]))
    # smoothed target = [0.9 + 0.05, 0.05]
    expected = -(0.95 * math.log(0.75) + 0.05 * math.log(0.25))
    assert out["loss_i2t"].item() == pytest.approx(0.5 * expected, abs=1e-6)
    cfg.CLIPREID.LOSSES.I2T.EPSILON = 0.0
    cfg.CLIPREID.LOSSES.I2T.SCALE = 1.0
    plain = LOSS_REGISTRY.get("ImageTextCrossEntropyLoss")(cfg)({"i2t_logits": logits}, torch.tensor([0]))
    assert plain["loss_i2t"].item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_i2t_loss_without_text_features_names_the_fix():
    loss = LOSS_REGISTRY.get("ImageTextCrossEntropyLoss")(get_cfg(["clipreid_plugin.plugins.clipreid"]))
    with pytest.raises(ConfigError, match="stage 1"):
        loss({"cls_outputs": []}, torch.tensor([0]))


def test_stage1_loss_reads_nothing_back_from_the_device(monkeypatch):
    """Stage 1's loss makes no host sync: every way to read a tensor's value raises during the call
    (on a GPU each of them waits for the device)."""
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    loss = LOSS_REGISTRY.get("ImageTextSupConLoss")(cfg)
    img, txt, labels = torch.randn(8, 4), torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    expected = loss({"image_features": img, "text_features": txt}, labels)

    def no_read(*_):
        raise AssertionError("a tensor value was read on the host")

    for name in ("__bool__", "item", "tolist", "numpy", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, no_read)
    out = loss({"image_features": img, "text_features": txt}, labels)
    monkeypatch.undo()
    assert torch.equal(out["loss_supcon_i2t"], expected["loss_supcon_i2t"])
    assert torch.equal(out["loss_supcon_t2i"], expected["loss_supcon_t2i"])


def test_supcon_checks_labels_that_differ_between_the_sides():
    """The check still runs when anchors and candidates carry separate label tensors (one anchor of
    three, label 7, has no candidate), and stage 1's loss rejects features without one label each."""
    with pytest.raises(ValueError, match="no candidate with the same label"):
        supcon_loss(torch.ones(3, 2), torch.ones(3, 2), torch.tensor([1, 7, 2]), torch.tensor([1, 2, 2]))
    loss = LOSS_REGISTRY.get("ImageTextSupConLoss")(get_cfg(["clipreid_plugin.plugins.clipreid"]))
    with pytest.raises(ValueError, match="3 image features, 2 text features and 3 labels"):
        loss({"image_features": torch.ones(3, 2), "text_features": torch.ones(2, 2)}, torch.tensor([0, 1, 2]))
