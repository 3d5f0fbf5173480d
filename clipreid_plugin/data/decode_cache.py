"""A shared uint8 cache of decoded (and resized) images, filled lazily by the loader workers.

JPEG decoding and resizing are deterministic, so their output (the transform's ``prepare``
step) is stored once per image; later epochs start from the cached array and only run the
random augmentations. Two storages:

* ``"ram"``: a shared-memory tensor (``/dev/shm``), visible to every worker process;
* ``"mmap"``: a ``numpy.memmap`` file under ``<OUTPUT_DIR>/decode_cache/`` (page cache,
  works where ``/dev/shm`` is small, e.g. in containers).

Size: N x H x W x 3 bytes at the transform's output size (Market-1501 at 256x128: 1.3 GB).
Workers write disjoint slots; a slot is marked filled after its pixels are written, so a
reader sees either a filled slot or decodes the image itself (decoding twice is harmless).
"""

import hashlib
import os
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from clipreid_plugin.utils.errors import ConfigError

__all__ = ["DecodeCache", "build_decode_cache"]


class DecodeCache:
    """N slots of uint8 (H, W, 3) images shared between processes.

    Picklable: worker processes re-open the storage instead of copying it.
    """

    def __init__(self, num: int, shape: Tuple[int, int], mode: str, path: Optional[str] = None):
        """
        Args:
            num: number of images.
            shape: (H, W) of every cached image.
            mode: ``"ram"`` or ``"mmap"``.
            path: file prefix for ``"mmap"`` (``<path>.pixels`` and ``<path>.filled``).
        """
        if mode not in ("ram", "mmap"):
            raise ConfigError(f"DATALOADER.DECODE_CACHE must be '', 'ram' or 'mmap', got {mode!r}.")
        self.num, self.shape, self.mode, self.path = num, (int(shape[0]), int(shape[1])), mode, path
        full = (num, self.shape[0], self.shape[1], 3)
        if mode == "ram":
            self._pixels_t = torch.zeros(full, dtype=torch.uint8).share_memory_()
            self._filled_t = torch.zeros(num, dtype=torch.uint8).share_memory_()
        else:
            if path is None:
                raise ValueError("DecodeCache(mode='mmap') needs a file path.")
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            # Fresh files every time: a stale cache from another run could hold other images.
            np.memmap(path + ".pixels", dtype=np.uint8, mode="w+", shape=full).flush()
            np.memmap(path + ".filled", dtype=np.uint8, mode="w+", shape=(num,)).flush()
        self._views = None

    def _arrays(self):
        if self._views is None:
            if self.mode == "ram":
                self._views = (self._pixels_t.numpy(), self._filled_t.numpy())
            else:
                full = (self.num, self.shape[0], self.shape[1], 3)
                self._views = (np.memmap(self.path + ".pixels", dtype=np.uint8, mode="r+", shape=full),
                               np.memmap(self.path + ".filled", dtype=np.uint8, mode="r+", shape=(self.num,)))
        return self._views

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_views"] = None  # numpy views/memmaps are re-created in each process
        return state

    def get(self, index: int, produce: Callable[[], np.ndarray]) -> np.ndarray:
        """Return slot ``index``, filling it with ``produce()`` the first time.

        Args:
            index: slot (sample index).
            produce: returns the uint8 (H, W, 3) image when the slot is empty.

        Returns:
            uint8 (H, W, 3) array (a copy, safe to modify).
        """
        pixels, filled = self._arrays()
        if filled[index]:
            return np.array(pixels[index])
        arr = produce()
        if arr.shape != pixels.shape[1:]:
            raise ValueError(f"DecodeCache: image of shape {arr.shape}, slots are {pixels.shape[1:]}.")
        pixels[index] = arr
        filled[index] = 1
        return arr

    def num_filled(self) -> int:
        """Returns: how many slots hold an image."""
        return int(self._arrays()[1].sum())


def build_decode_cache(mode: str, paths: Sequence[str], shape: Tuple[int, int], key: str,
                       output_dir: str, rank: int = 0) -> Optional[DecodeCache]:
    """Create the cache DATALOADER.DECODE_CACHE asks for (None when it is "").

    Args:
        mode: "", "ram" or "mmap".
        paths: image paths, in sample order (the cache slot of sample i is i).
        shape: (H, W) of the cached images.
        key: the transform's ``cache_key`` (size and interpolation).
        output_dir: OUTPUT_DIR; mmap files go to ``<output_dir>/decode_cache/``.
        rank: process rank (each process owns its files).

    Returns:
        DecodeCache or None.
    """
    if not mode:
        return None
    digest = hashlib.sha1(("\n".join(paths) + key).encode()).hexdigest()[:12]
    path = os.path.join(output_dir, "decode_cache", f"{key}-{digest}-rank{rank}")
    return DecodeCache(len(paths), shape, mode, path if mode == "mmap" else None)
