"""Transforms against torchvision + timm applied step by step, and hand-computed erasing."""

import random

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from clipreid_plugin.config import get_cfg
from clipreid_plugin.data.transforms import RandomErasing, build_transforms

timm_re = pytest.importorskip("timm.data.random_erasing")


def _image(seed=0, size=(23, 41)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def _cfg(rea_prob=0.5):
    cfg = get_cfg()
    cfg.INPUT.SIZE_TRAIN = [32, 16]
    cfg.INPUT.SIZE_TEST = [24, 12]
    cfg.INPUT.PIXEL_MEAN = [0.5, 0.4, 0.3]
    cfg.INPUT.PIXEL_STD = [0.2, 0.25, 0.3]
    cfg.INPUT.REA.PROB = rea_prob
    return cfg


@pytest.mark.parametrize("rea_prob", [0.5, 1.0])
def test_train_transform_equals_torchvision_timm_pipeline(rea_prob):
    """Same seeds -> bit-identical to Resize(bicubic)/Flip/Pad(10)/RandomCrop/ToTensor/Normalize/timm RE."""
    cfg = _cfg(rea_prob)
    ours = build_transforms(cfg, is_train=True)
    ref = T.Compose([
        T.Resize([32, 16], interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(0.5), T.Pad(10, fill=0), T.RandomCrop([32, 16]), T.ToTensor(),
        T.Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]),
        timm_re.RandomErasing(probability=rea_prob, mode="pixel", max_count=1, device="cpu"),
    ])
    flips, erased = set(), 0
    for seed in range(24):
        img = _image(seed)
        torch.manual_seed(seed)
        random.seed(1000 + seed)
        expected = ref(img)
        got = ours(img, random.Random(1000 + seed), torch.Generator().manual_seed(seed))
        assert torch.equal(got, expected), f"seed {seed}"
        without_re = T.Compose(ref.transforms[:-1])
        torch.manual_seed(seed)
        erased += int(not torch.equal(without_re(img), expected))
        flips.add(bool(torch.rand(1, generator=torch.Generator().manual_seed(seed)) < 0.5))
    assert flips == {True, False}  # both branches exercised
    assert erased > 0


def test_test_transform_equals_torchvision():
    cfg = _cfg()
    ours = build_transforms(cfg, is_train=False)
    ref = T.Compose([T.Resize([24, 12], interpolation=T.InterpolationMode.BILINEAR), T.ToTensor(),
                     T.Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])])
    for seed in range(3):
        img = _image(seed)
        assert torch.equal(ours(img), ref(img))
    assert not ours.is_random


class _ScriptedRandom(random.Random):
    """A Random whose uniform() returns scripted values (to hand-compute the rectangle)."""

    def __init__(self, uniforms):
        super().__init__(0)
        self.uniforms = list(uniforms)

    def random(self):
        return 0.0  # always erase

    def uniform(self, a, b):
        return self.uniforms.pop(0)

    def randint(self, a, b):
        return b  # bottom-right-most placement


def test_erasing_rectangle_hand_computed():
    """20x10 image: area 0.5*200=100 with aspect e^0 -> 10x10 rejected (w == W); then
    area 0.2*200 = 40, aspect e^log(2.5) -> h = round(sqrt(100)) = 10, w = round(sqrt(16)) = 4;
    randint returns the maximum: top = 20-10 = 10, left = 10-4 = 6."""
    erasing = RandomErasing(prob=0.5, area=(0.02, 1 / 3), aspect=0.3)
    img = torch.full((3, 20, 10), 7.0)
    erasing(img, _ScriptedRandom([0.5, 0.0, 0.2, float(np.log(2.5))]), torch.Generator().manual_seed(0))
    changed = (img != 7.0).all(0)
    expected = torch.zeros(20, 10, dtype=torch.bool)
    expected[10:20, 6:10] = True
    assert torch.equal(changed, expected)
    fill = img[:, 10:20, 6:10]
    assert torch.equal(fill, torch.empty(3, 10, 4).normal_(generator=torch.Generator().manual_seed(0)))


def test_erasing_gives_up_after_ten_attempts():
    erasing = RandomErasing(prob=1.0)
    img = torch.zeros(3, 4, 4)
    erasing(img, _ScriptedRandom([0.99, 0.0] * 10), torch.Generator())  # 16 px area: h=w=4 never < 4
    assert torch.count_nonzero(img) == 0


def test_padding_mode_other_than_constant_is_rejected():
    cfg = _cfg()
    cfg.INPUT.PADDING.MODE = "reflect"
    with pytest.raises(ValueError, match="INPUT.PADDING.MODE"):
        build_transforms(cfg, True)


class _RecordingRandom(_ScriptedRandom):
    """A _ScriptedRandom that also records the bounds each uniform() was asked for."""

    def __init__(self, uniforms):
        super().__init__(uniforms)
        self.bounds = []

    def uniform(self, a, b):
        self.bounds.append((a, b))
        return super().uniform(a, b)


@pytest.mark.parametrize("value", [[0.5 * 255, 0.4 * 255, 0.3 * 255], [255.0, 0.0, 128.0]])
def test_fastreid_erasing_fill_equals_torchvision_erase_before_the_models_normalisation(value):
    """fast-reid erases the 0..255 tensor with torchvision's constant ``value`` (its ToTensor keeps
    0..255) and its model normalises with ``PIXEL_MEAN * 255`` / ``PIXEL_STD * 255``. Here the
    constant is normalised as the image: same rectangle, same result (the ImageNet-mean default
    erases to 0)."""
    cfg = _cfg(rea_prob=1.0)
    cfg.INPUT.FLIP.ENABLED = cfg.INPUT.PADDING.ENABLED = False
    cfg.INPUT.REA.VALUE = value
    cfg.INPUT.REA.AREA, cfg.INPUT.REA.ASPECT_MAX = [0.02, 0.33], 3.3  # torchvision's scale and ratio
    ours = build_transforms(cfg, is_train=True)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1) * 255
    std = torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1) * 255
    for seed in range(6):
        img = _image(seed)
        rect = ours.erasing.sample_rect(random.Random(seed), 32, 16)
        assert rect is not None
        x = torch.from_numpy(np.array(T.Resize([32, 16], interpolation=T.InterpolationMode.BICUBIC)(img)))
        x = x.permute(2, 0, 1).float()  # fast-reid's ToTensor: 0..255
        expected = (T.functional.erase(x, *rect, torch.tensor(value).view(3, 1, 1)) - mean) / std
        got = ours(img, random.Random(seed), torch.Generator().manual_seed(seed))
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), f"seed {seed}"
        top, left, h, w = rect
        assert torch.allclose(got[:, top:top + h, left:left + w],
                              ((torch.tensor(value) / 255 - torch.tensor([0.5, 0.4, 0.3])) /
                               torch.tensor([0.2, 0.25, 0.3])).view(3, 1, 1).expand(3, h, w), atol=1e-6)


def test_erasing_aspect_range_and_value_length():
    """ASPECT_MAX bounds the log-uniform aspect draw (torchvision's ratio (0.3, 3.3)); 0 keeps timm's 1/ASPECT."""
    cfg = _cfg(rea_prob=1.0)
    cfg.INPUT.REA.ASPECT_MAX = 3.3
    rng = _RecordingRandom([0.1, 0.0])
    build_transforms(cfg, is_train=True).erasing.sample_rect(rng, 20, 10)
    assert rng.bounds[1] == (pytest.approx(np.log(0.3)), pytest.approx(np.log(3.3)))
    cfg.INPUT.REA.ASPECT_MAX = 0.0
    rng = _RecordingRandom([0.1, 0.0])
    build_transforms(cfg, is_train=True).erasing.sample_rect(rng, 20, 10)
    assert rng.bounds[1] == (pytest.approx(np.log(0.3)), pytest.approx(np.log(1 / 0.3)))
    cfg.INPUT.REA.VALUE = [1.0, 2.0]
    with pytest.raises(ValueError, match=r"INPUT.REA.VALUE needs one value per channel \(3"):
        build_transforms(cfg, is_train=True)
