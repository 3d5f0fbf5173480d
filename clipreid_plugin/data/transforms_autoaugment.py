"""fast-reid's AutoAugment (``INPUT.TRANSFORMS: [AutoAugment]``, ``INPUT.AUTOAUG.PROB``): the ImageNet policy of the AutoAugment paper.

fast-reid (``fastreid/data/transforms/autoaugment.py``, itself timm's) applies, with probability
``PROB`` (torchvision ``RandomApply``: one ``torch.rand(1)`` draw), one of the 25 two-operation
sub-policies of Cubuk et al. 2019's ImageNet policy ("original"), chosen uniformly; each operation
runs with its own probability at a fixed magnitude out of 10. Magnitude -> argument as there:

* Rotate: +-30 * m / 10 degrees, ShearX: +-0.3 * m / 10 (sign drawn at random), both with a random
  choice of bilinear / bicubic resampling and grey fill (128, 128, 128);
* Posterize ("original" variant): keep ``int(4 * m / 10) + 4`` bits; Solarize: threshold
  ``int(256 * m / 10)``; Color / Contrast / Sharpness: enhance factor ``1.8 * m / 10 + 0.1``;
* AutoContrast, Equalize, Invert: no argument.

Every random number comes from the Python ``random.Random`` and the torch generator the sample
is given (the project's per-sample seeding), in fast-reid's order (apply?, sub-policy, then per
operation: apply?, sign, resampling).

Difference from fast-reid, by design: it runs on the resized image (fast-reid: before the
resize), so the decoded-and-resized image stays cacheable (``DATALOADER.DECODE_CACHE``). Every
operation of this policy is photometric or a rotation / shear about the image centre, so the
result differs only by resampling at another resolution.
"""

import random
from typing import Optional, Tuple

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from clipreid_plugin.config.configurable import configurable
from clipreid_plugin.utils.errors import ConfigError

from .transforms import TRANSFORM_REGISTRY

__all__ = ["AutoAugment", "IMAGENET_POLICY", "apply_operation"]

MAX_LEVEL = 10.0
FILL = (128, 128, 128)
RESAMPLES = (Image.BILINEAR, Image.BICUBIC)

# (operation, probability, magnitude) pairs: the AutoAugment paper's ImageNet policy
IMAGENET_POLICY: Tuple[Tuple[Tuple[str, float, int], Tuple[str, float, int]], ...] = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, 8), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)),
    (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)

_ENHANCERS = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast, "Sharpness": ImageEnhance.Sharpness}


def _signed(value: float, rng: random.Random) -> float:
    """``-value`` with probability 1/2 (the draw: ``rng.random() > 0.5`` negates)."""
    return -value if rng.random() > 0.5 else value


def apply_operation(img: Image.Image, name: str, magnitude: float, rng: random.Random) -> Image.Image:
    """Apply one policy operation at ``magnitude`` (0..10) to an RGB image.

    Args:
        img: the PIL RGB image.
        name: an operation of :data:`IMAGENET_POLICY`.
        magnitude: its level out of 10.
        rng: the random source of the sign and of the resampling filter.

    Returns:
        The new image.
    """
    level = magnitude / MAX_LEVEL
    if name in ("Rotate", "ShearX"):
        value = _signed(level * (30.0 if name == "Rotate" else 0.3), rng)
        resample = rng.choice(RESAMPLES)
        if name == "Rotate":
            return img.rotate(value, resample=resample, fillcolor=FILL)
        return img.transform(img.size, Image.AFFINE, (1, value, 0, 0, 1, 0), resample=resample, fillcolor=FILL)
    if name == "Posterize":
        bits = int(level * 4) + 4
        return img if bits >= 8 else ImageOps.posterize(img, bits)
    if name == "Solarize":
        return ImageOps.solarize(img, int(level * 256))
    if name in _ENHANCERS:
        return _ENHANCERS[name](img).enhance(level * 1.8 + 0.1)
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    raise ValueError(f"unknown AutoAugment operation {name!r}")


@TRANSFORM_REGISTRY.register()
class AutoAugment:
    """fast-reid's AutoAugment step of the train transform (see the module docstring).

    Args:
        prob: probability of augmenting an image at all (``INPUT.AUTOAUG.PROB``).
    """

    @configurable
    def __init__(self, *, prob: float):
        if not 0.0 <= float(prob) <= 1.0:
            raise ConfigError(f"INPUT.AUTOAUG.PROB must be in [0, 1], got {prob}.")
        self.prob = float(prob)

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Arguments from ``INPUT.AUTOAUG.PROB``."""
        return {"prob": cfg.INPUT.AUTOAUG.PROB}

    def __call__(self, arr: np.ndarray, rng: Optional[random.Random] = None,
                 generator: Optional[torch.Generator] = None) -> np.ndarray:
        """Augment one uint8 (H, W, 3) image.

        Args:
            arr: the resized image.
            rng: Python random source of the policy's choices (default: the global one).
            generator: torch generator of the apply-or-not draw (default: the global one).

        Returns:
            The (possibly) augmented uint8 (H, W, 3) array, a new array.
        """
        rng = rng if rng is not None else random._inst
        if self.prob < float(torch.rand(1, generator=generator)):  # torchvision RandomApply
            return arr
        img = Image.fromarray(arr)
        for name, prob, magnitude in rng.choice(IMAGENET_POLICY):
            if prob < 1.0 and rng.random() > prob:
                continue
            img = apply_operation(img, name, magnitude, rng)
        return np.array(img, dtype=np.uint8)
