"""INPUT.DEVICE_AUGMENT: the device-side path against torchvision + timm (same seeds), its
statistics against the host (PIL) path (other seeds) and against the known distributions,
bit-identical output where nothing random happens, and epochs that depend only on (seed, epoch)."""

import math
import os
import random

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from clipreid_plugin.config import get_cfg
from clipreid_plugin.data import build_reid_test_loader, build_reid_train_loader, build_transforms
from clipreid_plugin.data.image_dataset import ReIDImageDataset, collate_batch
from clipreid_plugin.data.device_augment import DeviceTransform
from clipreid_plugin.data.transforms import normalize_uint8

timm_re = pytest.importorskip("timm.data.random_erasing")

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
KS_C_001 = 1.949  # Kolmogorov-Smirnov: c(alpha) = sqrt(-ln(alpha / 2) / 2) at alpha = 0.001


def _cfg(size=(32, 16), padding=10, rea_prob=0.5):
    cfg = get_cfg()
    cfg.INPUT.SIZE_TRAIN = list(size)
    cfg.INPUT.SIZE_TEST = list(size)
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = MEAN, STD
    cfg.INPUT.PADDING.SIZE = padding
    cfg.INPUT.REA.PROB = rea_prob
    return cfg


class _Arrays:
    """A stand-in decode cache that serves fixed uint8 (H, W, 3) arrays (no files, no decoding)."""

    def __init__(self, arrays):
        self.arrays = arrays

    def get(self, index, produce):
        return np.array(self.arrays[index])


def _device_batch(ds, keys, device_tf):
    return device_tf(collate_batch([ds[k] for k in keys]))["images"]


def test_device_path_equals_torchvision_timm_except_the_fill_values(tmp_path):
    """Same per-sample seeds: the device output equals Resize/Flip/Pad/RandomCrop/ToTensor/Normalize
    bit for bit outside the erased rectangle, and the erased pixels are exactly those timm erases."""
    cfg = _cfg()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(24):
        p = str(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (23, 41, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    tf = build_transforms(cfg, is_train=True)
    ds = ReIDImageDataset([(p, 0, 0, 0) for p in paths], tf, device_augment=True)
    seeds = list(range(100, 124))
    got = _device_batch(ds, list(zip(range(24), seeds)), DeviceTransform(tf, "cpu"))
    no_re = T.Compose([T.Resize([32, 16], interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip(0.5),
                       T.Pad(10, fill=0), T.RandomCrop([32, 16]), T.ToTensor(), T.Normalize(MEAN, STD)])
    erase = timm_re.RandomErasing(probability=0.5, mode="pixel", max_count=1, device="cpu")
    erased_images, flips = 0, set()
    for i, seed in enumerate(seeds):
        with Image.open(paths[i]) as img:
            torch.manual_seed(seed)
            expected = no_re(img)
        random.seed(seed)
        timm_erased = (erase(expected.clone()) != expected).any(0)
        device_changed = (got[i] != expected).any(0)
        assert torch.equal(device_changed, timm_erased), f"seed {seed}"
        erased_images += int(timm_erased.any())
        flips.add(bool(torch.rand(1, generator=torch.Generator().manual_seed(seed)) < 0.5))
    assert flips == {True, False} and 0 < erased_images < 24


# A horizontal ramp: column c holds 20 + 25 c in every channel, so each output pixel tells
# which input column it came from (or the zero padding); an erased pixel matches none.
RAMP_H, RAMP_W, PAD = 16, 8, 4
LEVELS = torch.tensor([0] + [20 + 25 * c for c in range(RAMP_W)], dtype=torch.uint8)  # index 0 = padding


def _ramp():
    return np.broadcast_to(LEVELS[1:].numpy()[None, :, None], (RAMP_H, RAMP_W, 3)).copy()


def _analyse(images):
    """Per image: flipped?, erased-area fraction; and every erased pixel value."""
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    levels = normalize_uint8(LEVELS.view(1, 1, -1).expand(3, 1, -1), mean, std)  # (3, 1, 10)
    hit = (images[..., None] == levels[None, :, :, None, :]).all(1)  # (N, H, W, 10)
    code = torch.where(hit.any(-1), hit.float().argmax(-1), torch.full(hit.shape[:3], -1))
    erased = code < 0
    col = code - 1  # input column, -1 = padding, -2 = erased
    pairs = (col[:, :, 1:] >= 0) & (col[:, :, :-1] >= 0)
    direction = ((col[:, :, 1:] - col[:, :, :-1]).sign() * pairs).sum((1, 2))
    assert (direction != 0).all()
    fill = images.permute(0, 2, 3, 1)[erased].flatten()
    return direction < 0, erased.float().mean((1, 2)), fill


def _ks_2samp(a, b):
    a, b = np.sort(a), np.sort(b)
    x = np.concatenate([a, b])
    return np.abs(np.searchsorted(a, x, "right") / len(a) - np.searchsorted(b, x, "right") / len(b)).max()


def _ks_normal(x):
    x = np.sort(x)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    i = np.arange(1, len(x) + 1)
    return max((i / len(x) - cdf).max(), (cdf - (i - 1) / len(x)).max())


def test_constant_erasing_fill_is_bit_identical_to_the_host_path():
    """fast-reid's constant fill (INPUT.REA.VALUE) has no random values: with the same per-sample
    seeds the device batch equals the host path's images bit for bit, erased rectangles included."""
    cfg = _cfg(rea_prob=0.7)
    cfg.INPUT.REA.VALUE = [255.0, 0.0, 128.0]
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (32, 16, 3), dtype=np.uint8) for _ in range(16)]
    tf = build_transforms(cfg, is_train=True)
    host = ReIDImageDataset([(f"{i}.png", 0, 0, 0) for i in range(16)], tf, cache=_Arrays(arrays))
    dev = ReIDImageDataset([(f"{i}.png", 0, 0, 0) for i in range(16)], tf, cache=_Arrays(arrays),
                           device_augment=True)
    keys = [(i, 500 + i) for i in range(16)]
    expected = torch.stack([host[k]["images"] for k in keys])
    got = _device_batch(dev, keys, DeviceTransform(tf, "cpu"))
    erased = sum(tf.draw(random.Random(s), torch.Generator().manual_seed(s)).erase is not None for _, s in keys)
    assert 0 < erased < 16 and torch.equal(got, expected)


def test_device_path_statistics_match_the_host_path_and_the_known_distributions():
    """1000 samples per path, disjoint seeds. Flip rate: Binomial(n, 0.5). Erased-image rate:
    Binomial(n, 0.5) (an attempt at this size almost never fails ten times). Erased-area
    fractions: same distribution on both paths (two-sample KS, alpha 0.001), inside
    [0.02, 1/3] up to the rounding of h and w. Fill: N(0, 1) (one-sample KS, mean, variance)."""
    n = 1000
    cfg = _cfg((RAMP_H, RAMP_W), PAD, 0.5)
    tf = build_transforms(cfg, is_train=True)
    cache = _Arrays([_ramp()])
    host = torch.stack([ReIDImageDataset([("ramp", 0, 0, 0)], tf, cache)[(0, s)]["images"] for s in range(n)])
    dev_ds = ReIDImageDataset([("ramp", 0, 0, 0)], tf, cache, device_augment=True)
    device_tf = DeviceTransform(tf, "cpu")
    device = torch.cat([_device_batch(dev_ds, [(0, s) for s in range(start, start + 100)], device_tf)
                        for start in range(n, 2 * n, 100)])
    four_sigma = 4 * math.sqrt(0.25 / n)
    stats = {}
    for name, images in (("host", host), ("device", device)):
        flipped, area, fill = _analyse(images)
        assert abs(flipped.float().mean().item() - 0.5) < four_sigma, name
        erased = area > 0
        assert abs(erased.float().mean().item() - 0.5) < four_sigma, name
        a = area[erased]
        # h, w = round(sqrt(A r)), round(sqrt(A / r)): h w within (sqrt(A r) +- 0.5)(sqrt(A / r) +- 0.5)
        lo = (math.sqrt(0.02 * 128 * 0.3) - 0.5) * (math.sqrt(0.02 * 128 / 0.3) - 0.5) / 128
        assert a.min().item() >= lo and a.max().item() <= 1 / 3 + (math.sqrt(128 / 3 * 10 / 3) + 0.25) / 128, name
        assert abs(fill.mean().item()) < 4 / math.sqrt(len(fill)), name
        assert abs(fill.var().item() - 1) < 4 * math.sqrt(2 / len(fill)), name
        assert _ks_normal(fill.numpy().astype(np.float64)) < KS_C_001 / math.sqrt(len(fill)), name
        stats[name] = a.numpy()
    h, d = stats["host"], stats["device"]
    assert _ks_2samp(h, d) < KS_C_001 * math.sqrt((len(h) + len(d)) / (len(h) * len(d)))


SMALL = dict(NUM_TRAIN_IDS=6, NUM_TEST_IDS=4, IMAGES_PER_ID=5, QUERY_PER_ID=2, NUM_CAMERAS=3,
             NUM_DISTRACTORS=3, NUM_JUNK=2, SIZE=[32, 16])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def _loader_cfg(root, device_augment, rea=True, workers=0):
    cfg = _cfg((32, 16), 4)
    cfg.DATASETS.ROOT_DIR = root
    cfg.DATASETS.NAMES = cfg.DATASETS.TESTS = ("SyntheticReID",)
    for k, v in SMALL.items():
        cfg.DATASETS.SYNTHETIC[k] = v
    cfg.INPUT.DEVICE_AUGMENT = device_augment
    cfg.INPUT.REA.ENABLED = rea
    cfg.MODEL.DEVICE = "cpu"
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.DATALOADER.NUM_INSTANCE = 2
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.DATALOADER.PERSISTENT_WORKERS = workers > 0
    cfg.TEST.IMS_PER_BATCH = 8
    cfg.OUTPUT_DIR = os.path.join(root, "out")
    return cfg


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_identical_output_where_nothing_random_happens(root):
    """Test loaders: the device path's normalisation is bit-identical to the host path. Train
    loaders without erasing: same seeds, same flips and crops, so bit-identical batches."""
    host, _ = build_reid_test_loader(_loader_cfg(root, False), "SyntheticReID")
    device, _ = build_reid_test_loader(_loader_cfg(root, True), "SyntheticReID")
    pairs = list(zip(host, device))
    assert len(pairs) == len(host) > 1
    for a, b in pairs:
        assert torch.equal(a["images"], b["images"]) and a["img_paths"] == b["img_paths"]
    a, b = (_epoch(build_reid_train_loader(_loader_cfg(root, d, rea=False)), 3) for d in (False, True))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["targets"], y["targets"])
        assert sorted(y) == ["camids", "images", "img_paths", "targets", "viewids"]


def test_device_path_channel_statistics_on_the_synthetic_images(root):
    """Same seeds on a fixed JPEG set: the two paths differ only in the N(0, 1) fill values, so
    each channel's mean and mean square differ by at most 5 standard deviations of that noise."""
    a, b = (torch.cat([x["images"] for e in range(3) for x in _epoch(build_reid_train_loader(_loader_cfg(root, d)), e)])
            for d in (False, True))
    erased = (a != b).any(1, keepdim=True).expand_as(a)
    n_fill = erased[:, 0].sum().item()
    assert n_fill > 0
    pixels = a.shape[0] * a.shape[2] * a.shape[3]
    for moment, var in ((1, 1.0), (2, 2.0)):  # Var(z) = 1, Var(z^2) = 2 for z ~ N(0, 1)
        ma, mb = (x.pow(moment).mean((0, 2, 3)) for x in (a, b))
        assert (ma - mb).abs().max().item() < 5 * math.sqrt(2 * var * n_fill) / pixels


def test_device_augmented_epochs_depend_only_on_seed_and_epoch(root):
    reference = _epoch(build_reid_train_loader(_loader_cfg(root, True)), 2)
    torch.manual_seed(7)
    loader = build_reid_train_loader(_loader_cfg(root, True, workers=2))
    _epoch(loader, 0)
    again = _epoch(loader, 2)
    assert len(again) == len(reference)
    assert all(torch.equal(x["images"], y["images"]) for x, y in zip(again, reference))
    other = _epoch(loader, 3)
    assert not all(torch.equal(x["images"], y["images"]) for x, y in zip(other, reference))


def test_device_transform_rejects_float_batches():
    tf = build_transforms(_cfg(), is_train=False)
    with pytest.raises(ValueError, match="uint8"):
        DeviceTransform(tf, "cpu")({"images": torch.zeros(2, 3, 32, 16)})
