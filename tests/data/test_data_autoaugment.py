"""fast-reid's AutoAugment (INPUT.AUTOAUG): the operations against their definitions, the apply
probability, seeding, and its place in the train transform."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from clipreid_plugin.config import get_cfg
from clipreid_plugin.data.transforms import build_transforms
from clipreid_plugin.data.transforms_autoaugment import IMAGENET_POLICY, AutoAugment, apply_operation
from clipreid_plugin.utils.errors import ConfigError


def _image(seed=0, h=16, w=8):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def _op(arr, name, magnitude, seed=0):
    return np.array(apply_operation(Image.fromarray(arr), name, magnitude, random.Random(seed)))


def test_pixel_operations_match_their_definitions():
    arr = _image()
    # Posterize ("original"): keep int(4 m / 10) + 4 bits -> m=8: 7 bits, m=5: 6 bits; m=10: 8 bits = unchanged
    assert np.array_equal(_op(arr, "Posterize", 8), arr & 0b11111110)
    assert np.array_equal(_op(arr, "Posterize", 5), arr & 0b11111100)
    assert np.array_equal(_op(arr, "Posterize", 10), arr)
    # Solarize: invert the pixels >= int(256 m / 10)  (m=5: 128; m=10: 256 = none)
    assert np.array_equal(_op(arr, "Solarize", 5), np.where(arr >= 128, 255 - arr, arr))
    assert np.array_equal(_op(arr, "Solarize", 10), arr)
    assert np.array_equal(_op(arr, "Invert", 4), 255 - arr)
    # Contrast at m=0 -> factor 0.1: blend with the mean grey level, 10 % of the original contrast
    low = _op(arr, "Contrast", 0).astype(float)
    assert low.std() == pytest.approx(0.1 * arr.astype(float).std(), rel=0.1)
    # Color at m=10 -> factor 1.9: colours pushed away from their grey value, which stays
    # (a low-saturation image, so nothing clips at 0 / 255)
    soft = (100 + arr // 5).astype(np.uint8)
    grey = np.array(Image.fromarray(soft).convert("L"), dtype=float)
    vivid = _op(soft, "Color", 10)
    assert np.abs(np.array(Image.fromarray(vivid).convert("L"), dtype=float) - grey).max() <= 2
    assert np.abs(vivid.astype(float) - grey[..., None]).mean() == pytest.approx(
        1.9 * np.abs(soft.astype(float) - grey[..., None]).mean(), rel=0.05)


def test_geometric_operations_rotate_about_the_centre_with_grey_fill():
    flat = np.full((20, 20, 3), 200, np.uint8)
    for name, magnitude in (("Rotate", 9), ("ShearX", 5)):
        out = _op(flat, name, magnitude)
        assert out.shape == flat.shape
        assert (out[10, 10] == 200).all()  # the centre stays
        assert (out == 128).any()  # corners filled with (128, 128, 128)
    # the sign is drawn: over seeds both directions occur (+-27 degrees at m=9)
    grad = np.tile(np.arange(20, dtype=np.uint8)[None, :, None] * 10, (20, 1, 3))
    outs = {_op(grad, "Rotate", 9, seed).tobytes() for seed in range(12)}
    assert len(outs) >= 2


def test_policy_is_the_imagenet_policy():
    assert len(IMAGENET_POLICY) == 25 and all(len(sp) == 2 for sp in IMAGENET_POLICY)
    assert IMAGENET_POLICY[0] == (("Posterize", 0.4, 8), ("Rotate", 0.6, 9))
    assert IMAGENET_POLICY[-1] == (("Equalize", 0.8, 8), ("Equalize", 0.6, 3))


def test_apply_probability_and_seeding():
    arr = _image(1)
    never = AutoAugment(prob=0.0)
    r = random.Random(3)
    state = r.getstate()
    assert never(arr, r, torch.Generator().manual_seed(0)) is arr and r.getstate() == state  # no policy draws
    aa = AutoAugment(prob=0.1)
    applied = sum(float(torch.rand(1, generator=torch.Generator().manual_seed(s))) <= 0.1 for s in range(2000))
    changed = sum(not np.array_equal(aa(arr, random.Random(s), torch.Generator().manual_seed(s)), arr)
                  for s in range(2000))
    assert 140 <= applied <= 260 and changed <= applied  # a sub-policy may also leave the image as it is
    always = AutoAugment(prob=1.0)
    a = always(arr, random.Random(7), torch.Generator().manual_seed(7))
    b = always(arr, random.Random(7), torch.Generator().manual_seed(7))
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == arr.shape


def test_autoaugment_config_and_train_transform():
    cfg = get_cfg()
    cfg.INPUT.SIZE_TRAIN = [16, 8]
    cfg.INPUT.TRANSFORMS = ("AutoAugment",)
    cfg.INPUT.AUTOAUG.PROB = 1.0
    t = build_transforms(cfg, is_train=True)
    assert [type(a) for a in t.augmentations] == [AutoAugment] and t.augmentations[0].prob == 1.0
    assert build_transforms(cfg, is_train=False).augmentations == []  # train only
    img = Image.fromarray(_image(2))
    x = t(img, random.Random(5), torch.Generator().manual_seed(5))
    assert x.shape == (3, 16, 8) and torch.isfinite(x).all()
    cfg.INPUT.AUTOAUG.PROB = 1.5
    with pytest.raises(ConfigError, match="INPUT.AUTOAUG.PROB"):
        build_transforms(cfg, is_train=True)
