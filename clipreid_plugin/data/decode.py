"""Image decoding: the one function every image of training, evaluation, extraction and search
goes through, from a file to the 8-bit RGB picture the camera saw.

:func:`read_image` opens and fully decodes a file; :func:`to_rgb` turns any PIL image into
8-bit RGB the same way:

* **EXIF orientation** is applied (``ImageOps.exif_transpose``): a phone photo tagged "rotate
  90" is seen upright, as every viewer shows it.
* **16-bit grey** (``I;16``, ``I;16B``, ``I;16L``, and ``I``, which is how PIL opens some 16-bit
  PNG and TIFF files) is scaled to 8 bits, ``round(v * 255 / 65535)`` with ``v`` clipped to
  0..65535; PIL's own ``convert`` clips at 255 instead, turning almost every pixel white.
* **Alpha** (``RGBA``, ``LA``, ``PA``, a palette with a transparent colour) is composited over
  **black**: ``round(c * a / 255)``. Black is what the transforms already put where a crop has
  no content (``INPUT.PADDING`` pads with 0), so a cut-out person on a transparent background
  looks to the model like a padded crop; keeping the hidden colour of transparent pixels
  instead would feed it whatever the editor left there.
* **CMYK** uses the multiplicative formula ``R = (255 - C) (255 - K) / 255`` (G, B alike; no
  colour profile); PIL's ``convert`` subtracts (``255 - C - K``) and darkens mid tones.
* **Palette** (``P``), **grey** (``L``, 1-bit ``1``) and the other modes PIL converts itself
  (``YCbCr``, ...) go through ``convert("RGB")``: grey levels are repeated in R, G and B, a
  1-bit image is 0 or 255.

A file whose header declares more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (89 million by
default; a ReID crop has thousands) is rejected before it is decoded: a decompression bomb would
take the memory of the machine. Every failure is a :class:`DatasetError` naming the file, the
cause and ``advice`` (the caller's: training says how to skip such images, extraction how to
leave them out).
"""

import warnings
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageOps

from .datasets.bases import DatasetError

__all__ = ["read_image", "to_rgb", "upright_size", "DEFAULT_ADVICE"]

DEFAULT_ADVICE = "Fix or remove the file."
_ORIENTATION = 0x0112  # the EXIF tag
_SWAPS_SIDES = (5, 6, 7, 8)  # orientations that turn the picture by 90 degrees
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")

# read_image rejects these images itself, with the file's name; PIL's warning (printed once,
# without the name, before the image is decoded anyway) would only add noise
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _over_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    # round(c * a / 255) in integers
    return ((rgb.astype(np.uint32) * alpha[..., None] + 127) // 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB image of ``img``, upright (see the module's docstring for each mode).

    Args:
        img: a decoded PIL image of any mode.

    Returns:
        An ``RGB`` image (``img`` itself when it already is one and has no EXIF rotation).
    """
    if img.getexif().get(_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT:
        v = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        grey = ((v * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
    if mode == "CMYK":
        cmyk = 255 - np.asarray(img).astype(np.uint32)  # (255 - C, 255 - M, 255 - Y, 255 - K)
        return Image.fromarray(((cmyk[..., :3] * cmyk[..., 3:] + 127) // 255).astype(np.uint8))
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _WITH_ALPHA:
        rgba = np.asarray(img.convert("RGBA"))
        return Image.fromarray(_over_black(rgba[..., :3], rgba[..., 3]))
    return img.convert("RGB")


def upright_size(path: str) -> Tuple[int, int]:
    """Returns: (width, height) of the image file as :func:`read_image` returns it (EXIF rotation
    applied), from its header only."""
    with Image.open(path) as img:
        w, h = img.size
        return (h, w) if img.getexif().get(_ORIENTATION, 1) in _SWAPS_SIDES else (w, h)


def read_image(path: str, advice: Optional[str] = None) -> Image.Image:
    """Open, check and fully decode an image file as 8-bit RGB (see :func:`to_rgb`).

    Args:
        path: image file.
        advice: what the user can do about a bad file, appended to the error (default: "Fix
            or remove the file.").

    Returns:
        The ``RGB`` PIL image (decoded here, so a truncated file fails here and not later).

    Raises:
        DatasetError: the file is missing, unreadable, truncated, of an unknown format, or
            declares more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    advice = advice or DEFAULT_ADVICE
    limit = Image.MAX_IMAGE_PIXELS
    try:
        img = Image.open(path)  # reads the header only
        w, h = img.size
        if limit is not None and w * h > limit:
            img.close()
            raise DatasetError(f"Image {path} declares {w} x {h} pixels, more than PIL.Image.MAX_IMAGE_PIXELS "
                               f"({limit}): a corrupt or malicious file (decompression bomb), not a crop. {advice}")
        img.load()  # closes the file of a single-frame image
        return to_rgb(img)
    except DatasetError:
        raise
    except Image.DecompressionBombError as e:  # raised by open() past twice the limit
        raise DatasetError(f"Image {path} is a decompression bomb ({e}). {advice}") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as e:
        raise DatasetError(f"Cannot read image {path}: {e}. {advice}") from None
