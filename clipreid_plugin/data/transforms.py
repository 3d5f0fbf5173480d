"""Train and test transforms of the reference, with explicit random generators.

Train: Resize(SIZE_TRAIN, bicubic) -> RandomHorizontalFlip(p) -> Pad(10, zeros) ->
RandomCrop(SIZE_TRAIN) -> ToTensor -> Normalize -> RandomErasing (timm, mode 'pixel').
Test: Resize(SIZE_TEST, bilinear) -> ToTensor -> Normalize.

Every transform is split in two steps so that images can be cached after the deterministic
part: :meth:`ReIDTransform.prepare` (PIL image -> RGB -> resize -> uint8 HxWx3 array) and
:meth:`ReIDTransform.augment` (array -> normalised tensor, drawing every random number from
the generators it is given). Flip, pad and crop run on the uint8 tensor, which is
pixel-identical to the PIL operations and faster. Random numbers are drawn exactly as
torchvision (``torch.rand(1) < p`` for the flip, ``torch.randint`` for the crop's top then
left) and timm (Python ``random`` for the erasing decisions, ``normal_`` for the fill, from
the same torch generator after the flip/crop draws), so with the same seeds the output
equals torchvision + timm's pipeline bit for bit.
"""

import math
import random
from typing import Optional, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from clipreid_plugin.utils.errors import ConfigError

__all__ = ["ReIDTransform", "RandomErasing", "build_transforms"]

_INTERPOLATIONS = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                   "nearest": InterpolationMode.NEAREST, "lanczos": InterpolationMode.LANCZOS}


class RandomErasing:
    """timm's ``RandomErasing(mode='pixel', max_count=1)`` with explicit random sources.

    With probability ``prob`` erase one rectangle: up to 10 attempts of area fraction
    ~ U(area[0], area[1]), aspect ratio = exp(U(log aspect, log 1/aspect)),
    h = round(sqrt(A*r)), w = round(sqrt(A/r)), accepted when h < H and w < W; top/left
    uniform (inclusive); filled with per-pixel N(0, 1) values.
    """

    def __init__(self, prob: float = 0.5, area: Sequence[float] = (0.02, 1 / 3), aspect: float = 0.3):
        """
        Args:
            prob: probability of erasing.
            area: (min, max) erased area as a fraction of the image.
            aspect: minimal aspect ratio (the maximum is 1/aspect).
        """
        self.prob = prob
        self.area = (float(area[0]), float(area[1]))
        self.log_aspect = (math.log(aspect), math.log(1.0 / aspect))

    def __call__(self, img: torch.Tensor, rng: random.Random, generator: torch.Generator) -> torch.Tensor:
        """Erase in place.

        Args:
            img: (C, H, W) float tensor (already normalised).
            rng: source of the erasing decisions (order: probability, then per attempt
                area, aspect, and on success top, left).
            generator: torch generator of the N(0, 1) fill.

        Returns:
            ``img``.
        """
        if rng.random() > self.prob:
            return img
        chan, img_h, img_w = img.shape
        for _ in range(10):
            target_area = rng.uniform(*self.area) * img_h * img_w
            ratio = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(target_area * ratio)))
            w = int(round(math.sqrt(target_area / ratio)))
            if w < img_w and h < img_h:
                top = rng.randint(0, img_h - h)
                left = rng.randint(0, img_w - w)
                img[:, top:top + h, left:left + w] = torch.empty(
                    (chan, h, w), dtype=img.dtype).normal_(generator=generator).to(img.device)
                break
        return img


class ReIDTransform:
    """Resize + (train only) flip/pad/crop/erasing + normalisation.

    Call it as ``t(pil_image, rng, generator)``, or use :meth:`prepare` + :meth:`augment`.
    """

    def __init__(self, size: Sequence[int], interpolation: str, mean: Sequence[float],
                 std: Sequence[float], flip_prob: float = 0.0, padding: int = 0,
                 erasing: Optional[RandomErasing] = None):
        """
        Args:
            size: output (height, width).
            interpolation: "bicubic", "bilinear", "nearest" or "lanczos" (PIL resize).
            mean / std: per-channel normalisation of [0, 1] images.
            flip_prob: horizontal flip probability (0 = no flip, no random draw).
            padding: zero padding before the random crop back to ``size`` (0 = no crop).
            erasing: random erasing after normalisation, or None.
        """
        if interpolation not in _INTERPOLATIONS:
            raise ConfigError(f"Unknown interpolation {interpolation!r} (INPUT.INTERPOLATION_*); "
                              f"valid: {', '.join(_INTERPOLATIONS)}.")
        self.size = (int(size[0]), int(size[1]))
        self.interpolation = interpolation
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.flip_prob = flip_prob
        self.padding = int(padding)
        self.erasing = erasing

    @property
    def is_random(self) -> bool:
        """Returns: whether :meth:`augment` draws random numbers."""
        return self.flip_prob > 0 or self.padding > 0 or self.erasing is not None

    @property
    def cache_key(self) -> str:
        """Returns: identifies the output of :meth:`prepare` (for decode caches)."""
        return f"{self.size[0]}x{self.size[1]}-{self.interpolation}"

    def prepare(self, img: Image.Image) -> np.ndarray:
        """Deterministic part: convert to RGB and resize.

        Args:
            img: a PIL image.

        Returns:
            uint8 array (H, W, 3).
        """
        img = TF.resize(img.convert("RGB"), list(self.size), _INTERPOLATIONS[self.interpolation])
        return np.array(img, dtype=np.uint8)  # a writable copy (torch.from_numpy needs one)

    def augment(self, arr: np.ndarray, rng: Optional[random.Random] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Random part and normalisation.

        Args:
            arr: uint8 (H, W, 3) array from :meth:`prepare`.
            rng: Python random source of the erasing decisions (default: the global one).
            generator: torch generator of flip, crop and erasing fill (default: the global one).

        Returns:
            float tensor (3, H, W).
        """
        x = torch.from_numpy(arr).permute(2, 0, 1)
        if self.flip_prob > 0 and torch.rand(1, generator=generator) < self.flip_prob:
            x = x.flip(-1)
        if self.padding > 0:
            x = torch.nn.functional.pad(x, [self.padding] * 4)
            h, w = self.size
            ph, pw = x.shape[-2:]
            if (ph, pw) != (h, w):  # torchvision draws nothing when sizes are equal
                top = int(torch.randint(0, ph - h + 1, size=(1,), generator=generator).item())
                left = int(torch.randint(0, pw - w + 1, size=(1,), generator=generator).item())
                x = x[:, top:top + h, left:left + w]
        x = x.float().div(255).sub_(self.mean).div_(self.std)
        if self.erasing is not None:
            gen = generator if generator is not None else torch.default_generator
            self.erasing(x, rng if rng is not None else random._inst, gen)
        return x

    def __call__(self, img: Image.Image, rng: Optional[random.Random] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Returns: ``augment(prepare(img), rng, generator)``."""
        return self.augment(self.prepare(img), rng, generator)


def build_transforms(cfg, is_train: bool) -> ReIDTransform:
    """Build the train or test transform from the INPUT keys.

    Args:
        cfg: the config.
        is_train: train (augmented) or test transform.

    Returns:
        ReIDTransform.
    """
    i = cfg.INPUT
    if i.PADDING.MODE != "constant":
        raise ConfigError(f"INPUT.PADDING.MODE={i.PADDING.MODE!r} is not supported; only 'constant' "
                          f"(zero padding, as the reference).")
    if not is_train:
        return ReIDTransform(i.SIZE_TEST, i.INTERPOLATION_TEST, i.PIXEL_MEAN, i.PIXEL_STD)
    erasing = RandomErasing(i.REA.PROB, i.REA.AREA, i.REA.ASPECT) if i.REA.ENABLED else None
    return ReIDTransform(
        i.SIZE_TRAIN, i.INTERPOLATION_TRAIN, i.PIXEL_MEAN, i.PIXEL_STD,
        flip_prob=i.FLIP.PROB if i.FLIP.ENABLED else 0.0,
        padding=i.PADDING.SIZE if i.PADDING.ENABLED else 0,
        erasing=erasing)
