"""Train and test transforms of the reference, with explicit random generators.

Train: Resize(SIZE_TRAIN, bicubic) -> [the registered augmentations named in INPUT.TRANSFORMS, e.g.
fast-reid's AutoAugment] -> RandomHorizontalFlip(p)
-> Pad(10, zeros) -> RandomCrop(SIZE_TRAIN) -> ToTensor -> Normalize -> RandomErasing (timm's draws; mode 'pixel', or
fast-reid's constant ``INPUT.REA.VALUE``).
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

The random numbers are drawn first (:meth:`ReIDTransform.draw`: flip, crop offsets, erasing
rectangle) and applied after, so the same draws also drive the device-side path
(``INPUT.DEVICE_AUGMENT``, :mod:`.device_augment`), which applies them to whole batches on the
model's device.
"""

import math
import random
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from clipreid_plugin.config import as_name_list
from clipreid_plugin.utils.errors import ConfigError
from clipreid_plugin.utils.registry import Registry

from .decode import to_rgb

__all__ = ["TRANSFORM_REGISTRY", "ReIDTransform", "RandomErasing", "AugmentParams", "normalize_uint8", "build_transforms"]

TRANSFORM_REGISTRY = Registry("TRANSFORM", training_keys=["INPUT.TRANSFORMS"])
TRANSFORM_REGISTRY.__doc__ = """
Train-time augmentations of the resized uint8 (H, W, 3) image, applied in the order
``INPUT.TRANSFORMS`` names them, before the flip / pad / crop draws. A registered class is built
as ``cls(cfg)`` (the configurable convention) and called as ``t(arr, rng, generator) -> arr``:
``rng`` (a ``random.Random``) and ``generator`` (a ``torch.Generator``) are the sample's own
random sources, so an epoch's augmentations are a function of the seed (exact resume). fast-reid's
AutoAugment is one (``AutoAugment``, its probability ``INPUT.AUTOAUG.PROB``).
"""

_INTERPOLATIONS = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                   "nearest": InterpolationMode.NEAREST, "lanczos": InterpolationMode.LANCZOS}


class RandomErasing:
    """One erased rectangle per image, drawn as timm's ``RandomErasing(max_count=1)``, with explicit random sources.

    With probability ``prob`` erase one rectangle: up to 10 attempts of area fraction
    ~ U(area[0], area[1]), aspect ratio = exp(U(log aspect, log aspect_max)),
    h = round(sqrt(A*r)), w = round(sqrt(A/r)), accepted when h < H and w < W; top/left
    uniform (inclusive). The fill is per-pixel N(0, 1) noise (timm's mode 'pixel', the CLIP-ReID
    reference) or one constant per channel (torchvision's ``value``, as fast-reid erases).
    """

    def __init__(self, prob: float = 0.5, area: Sequence[float] = (0.02, 1 / 3), aspect: float = 0.3,
                 aspect_max: Optional[float] = None, value: Optional[torch.Tensor] = None):
        """
        Args:
            prob: probability of erasing.
            area: (min, max) erased area as a fraction of the image.
            aspect: minimal aspect ratio.
            aspect_max: maximal aspect ratio (None: 1 / ``aspect``, timm's).
            value: (C,) fill of the normalised image, one constant per channel; None: N(0, 1) noise.
        """
        self.prob = prob
        self.area = (float(area[0]), float(area[1]))
        self.log_aspect = (math.log(aspect), math.log(aspect_max if aspect_max else 1.0 / aspect))
        self.value = None if value is None else torch.as_tensor(value, dtype=torch.float32).view(-1, 1, 1)

    def sample_rect(self, rng: random.Random, img_h: int, img_w: int) -> Optional[Tuple[int, int, int, int]]:
        """Draw the erasing decisions of one image (no fill).

        Args:
            rng: source of the decisions (order: probability, then per attempt area, aspect,
                and on success top, left).
            img_h / img_w: image size.

        Returns:
            ``(top, left, h, w)`` of the rectangle to erase, or None (no erasing, or ten
            rejected attempts).
        """
        if rng.random() > self.prob:
            return None
        for _ in range(10):
            target_area = rng.uniform(*self.area) * img_h * img_w
            ratio = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(target_area * ratio)))
            w = int(round(math.sqrt(target_area / ratio)))
            if w < img_w and h < img_h:
                top = rng.randint(0, img_h - h)
                left = rng.randint(0, img_w - w)
                return top, left, h, w
        return None

    def fill(self, img: torch.Tensor, rect: Optional[Tuple[int, int, int, int]],
             generator: torch.Generator) -> torch.Tensor:
        """Fill ``rect`` of ``img`` in place: the constant ``value``, or per-pixel N(0, 1) values
        drawn from ``generator``.

        Args:
            img: (C, H, W) float tensor.
            rect: ``(top, left, h, w)`` from :meth:`sample_rect`, or None (nothing to do).
            generator: torch generator of the noise fill (unused with a constant ``value``).

        Returns:
            ``img``.
        """
        if rect is not None:
            top, left, h, w = rect
            if self.value is not None:
                img[:, top:top + h, left:left + w] = self.value.to(img.device, img.dtype)
            else:
                img[:, top:top + h, left:left + w] = torch.empty(
                    (img.shape[0], h, w), dtype=img.dtype).normal_(generator=generator).to(img.device)
        return img

    def __call__(self, img: torch.Tensor, rng: random.Random, generator: torch.Generator) -> torch.Tensor:
        """Erase in place.

        Args:
            img: (C, H, W) float tensor (already normalised).
            rng: source of the erasing decisions (see :meth:`sample_rect`).
            generator: torch generator of the N(0, 1) fill.

        Returns:
            ``img``.
        """
        return self.fill(img, self.sample_rect(rng, img.shape[1], img.shape[2]), generator)


class AugmentParams(NamedTuple):
    """The random draws of one training sample (what :meth:`ReIDTransform.draw` returns).

    Attributes:
        flip: mirror horizontally (before padding, as torchvision's pipeline).
        top / left: crop offset inside the zero-padded image (``padding, padding`` = no shift).
        erase: ``(top, left, h, w)`` of the erased rectangle, or None.
    """

    flip: bool
    top: int
    left: int
    erase: Optional[Tuple[int, int, int, int]]


def normalize_uint8(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """ToTensor + Normalize of uint8 images: ``(x / 255 - mean) / std`` in float32.

    The one implementation used by the host and the device paths, so both give the same bits.

    Args:
        x: uint8 (3, H, W) or (B, 3, H, W) tensor.
        mean / std: (3, 1, 1) float32 tensors on ``x``'s device.

    Returns:
        float32 tensor of ``x``'s shape (contiguous).
    """
    return x.to(torch.float32, memory_format=torch.contiguous_format).div_(255).sub_(mean).div_(std)


class ReIDTransform:
    """Resize + (train only) flip/pad/crop/erasing + normalisation.

    Call it as ``t(pil_image, rng, generator)``, or use :meth:`prepare` + :meth:`augment`.
    """

    def __init__(self, size: Sequence[int], interpolation: str, mean: Sequence[float],
                 std: Sequence[float], flip_prob: float = 0.0, padding: int = 0,
                 erasing: Optional[RandomErasing] = None, augmentations: Sequence[Callable] = ()):
        """
        Args:
            size: output (height, width).
            interpolation: "bicubic", "bilinear", "nearest" or "lanczos" (PIL resize).
            mean / std: per-channel normalisation of [0, 1] images.
            flip_prob: horizontal flip probability (0 = no flip, no random draw).
            padding: zero padding before the random crop back to ``size`` (0 = no crop).
            erasing: random erasing after normalisation, or None.
            augmentations: registered train augmentations of the resized image, in order
                (:meth:`pre_augment`; :data:`TRANSFORM_REGISTRY`).
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
        self.augmentations = list(augmentations)

    @property
    def is_random(self) -> bool:
        """Returns: whether :meth:`augment` draws random numbers."""
        return self.flip_prob > 0 or self.padding > 0 or self.erasing is not None or bool(self.augmentations)

    def pre_augment(self, arr: np.ndarray, rng: Optional[random.Random] = None,
                    generator: Optional[torch.Generator] = None) -> np.ndarray:
        """The registered augmentations of the uint8 image, before the flip / crop draws.

        Returns:
            ``arr`` itself when there is none, else the augmented copy.
        """
        for augment in self.augmentations:
            arr = augment(arr, rng, generator)
        return arr

    @property
    def cache_key(self) -> str:
        """Returns: identifies the output of :meth:`prepare` (for decode caches)."""
        return f"{self.size[0]}x{self.size[1]}-{self.interpolation}"

    def prepare(self, img: Image.Image) -> np.ndarray:
        """Deterministic part: convert to 8-bit RGB (:func:`~clipreid_plugin.data.decode.to_rgb`:
        upright, 16-bit scaled, alpha over black) and resize.

        Args:
            img: a PIL image of any mode (:func:`~clipreid_plugin.data.decode.read_image`'s are RGB).

        Returns:
            uint8 array (H, W, 3).
        """
        img = TF.resize(to_rgb(img), list(self.size), _INTERPOLATIONS[self.interpolation])
        return np.array(img, dtype=np.uint8)  # a writable copy (torch.from_numpy needs one)

    def draw(self, rng: Optional[random.Random] = None,
             generator: Optional[torch.Generator] = None) -> AugmentParams:
        """Draw the random part of one sample, in torchvision + timm's order: flip
        (``torch.rand``), crop top then left (``torch.randint``), then the erasing decisions
        (Python ``random``). The erasing fill is drawn later, from ``generator``.

        Args:
            rng: Python random source of the erasing decisions (default: the global one).
            generator: torch generator of flip and crop (default: the global one).

        Returns:
            AugmentParams (no flip, centred crop and no erasing for what is disabled).
        """
        flip = bool(self.flip_prob > 0 and torch.rand(1, generator=generator) < self.flip_prob)
        top = left = self.padding
        if self.padding > 0:
            h, w = self.size
            ph, pw = h + 2 * self.padding, w + 2 * self.padding  # larger than (h, w): torchvision draws
            top = int(torch.randint(0, ph - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, pw - w + 1, size=(1,), generator=generator).item())
        erase = None
        if self.erasing is not None:
            erase = self.erasing.sample_rect(rng if rng is not None else random._inst, *self.size)
        return AugmentParams(flip, top, left, erase)

    def augment(self, arr: np.ndarray, rng: Optional[random.Random] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Random part and normalisation, on the host.

        Args:
            arr: uint8 (H, W, 3) array from :meth:`prepare`.
            rng: Python random source of the erasing decisions (default: the global one).
            generator: torch generator of flip, crop and erasing fill (default: the global one).

        Returns:
            float tensor (3, H, W).
        """
        arr = self.pre_augment(arr, rng, generator)
        x = torch.from_numpy(arr).permute(2, 0, 1)
        if not self.is_random:
            return normalize_uint8(x, self.mean, self.std)
        p = self.draw(rng, generator)
        if p.flip:
            x = x.flip(-1)
        if self.padding > 0:
            h, w = self.size
            x = torch.nn.functional.pad(x, [self.padding] * 4)[:, p.top:p.top + h, p.left:p.left + w]
        x = normalize_uint8(x, self.mean, self.std)
        if p.erase is not None:
            self.erasing.fill(x, p.erase, generator if generator is not None else torch.default_generator)
        return x

    def __call__(self, img: Image.Image, rng: Optional[random.Random] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Returns: ``augment(prepare(img), rng, generator)``."""
        return self.augment(self.prepare(img), rng, generator)


def _build_erasing(i) -> RandomErasing:
    """The random erasing of the ``INPUT`` node (``REA.*``). A ``REA.VALUE`` (0..255 pixel units,
    fast-reid's) is normalised as the image is, so erasing before or after the normalisation agree."""
    value = None
    if len(i.REA.VALUE):
        if len(i.REA.VALUE) != len(i.PIXEL_MEAN):
            raise ConfigError(f"INPUT.REA.VALUE needs one value per channel ({len(i.PIXEL_MEAN)}, 0..255) or [] "
                              f"for N(0, 1) noise, got {list(i.REA.VALUE)}.")
        value = normalize_uint8(torch.tensor(i.REA.VALUE, dtype=torch.float64).view(-1, 1, 1),
                                torch.tensor(i.PIXEL_MEAN, dtype=torch.float32).view(-1, 1, 1),
                                torch.tensor(i.PIXEL_STD, dtype=torch.float32).view(-1, 1, 1)).view(-1)
    return RandomErasing(i.REA.PROB, i.REA.AREA, i.REA.ASPECT, i.REA.ASPECT_MAX or None, value)


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
    erasing = _build_erasing(i) if i.REA.ENABLED else None
    return ReIDTransform(
        i.SIZE_TRAIN, i.INTERPOLATION_TRAIN, i.PIXEL_MEAN, i.PIXEL_STD,
        flip_prob=i.FLIP.PROB if i.FLIP.ENABLED else 0.0,
        padding=i.PADDING.SIZE if i.PADDING.ENABLED else 0,
        erasing=erasing,
        augmentations=[TRANSFORM_REGISTRY.build(name, cfg, key="INPUT.TRANSFORMS") for name in as_name_list(i.TRANSFORMS)])
