"""The torch Dataset over ``(path, pid, camid, viewid)`` samples, and collation (images are read
by :func:`~clipreid_plugin.data.decode.read_image`, re-exported here)."""

import logging
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from .datasets.bases import DatasetError, Sample
from .decode import read_image
from .decode_cache import DecodeCache
from .device_augment import AUGMENT_KEYS
from .transforms import ReIDTransform

__all__ = ["ReIDImageDataset", "read_image", "collate_batch", "drop_unreadable", "SKIP_ADVICE"]

logger = logging.getLogger(__name__)


# what a user of the training / evaluation loaders can do about a bad image
SKIP_ADVICE = ("Fix or remove the file, or set DATASETS.SKIP_BAD_IMAGES True to skip unreadable images (they are "
               "counted and logged).")


def drop_unreadable(samples: Sequence[Sample], what: str, num_threads: int = 8) -> List[Sample]:
    """Decode every image once and drop the ones that fail (DATASETS.SKIP_BAD_IMAGES).

    Args:
        samples: the samples to check.
        what: name of the split, for the log.
        num_threads: decoding threads (PIL releases the GIL while decoding).

    Returns:
        The readable samples, in order.
    """
    def ok(sample):
        try:
            read_image(sample[0], SKIP_ADVICE)
            return True
        except DatasetError:
            return False

    with ThreadPoolExecutor(num_threads) as pool:
        flags = list(pool.map(ok, samples))
    bad = [s[0] for s, f in zip(samples, flags) if not f]
    if bad:
        logger.warning(f"{what}: skipped {len(bad)} unreadable image(s) (DATASETS.SKIP_BAD_IMAGES): "
                       + ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))
    return [s for s, f in zip(samples, flags) if f]


class ReIDImageDataset(torch.utils.data.Dataset):
    """Map-style dataset: ``ds[i]`` or ``ds[(i, seed)]`` -> one sample dict.

    With a seed, every random augmentation of the sample is drawn from generators seeded by
    it (a ``random.Random`` and a ``torch.Generator``), so the result does not depend on the
    worker process or on the global random state.

    With ``device_augment`` the sample's ``images`` is the resized uint8 (H, W, 3) image and
    the random draws travel beside it (``aug_flip``, ``aug_crop``, ``aug_erase``,
    ``aug_seed``); :class:`~clipreid_plugin.data.device_augment.DeviceTransform` applies them
    to the whole batch on the model's device.
    """

    def __init__(self, samples: Sequence[Sample], transform: ReIDTransform,
                 cache: Optional[DecodeCache] = None, device_augment: bool = False,
                 bad_image_advice: Optional[str] = None):
        """
        Args:
            samples: ``(path, pid, camid, viewid)`` tuples.
            transform: the transform (its ``prepare`` output is what ``cache`` stores).
            cache: optional shared decode cache with one slot per sample.
            device_augment: return uint8 images and the augmentation draws instead of
                augmented float images (``INPUT.DEVICE_AUGMENT``).
            bad_image_advice: what the user can do about an unreadable image, appended to its
                error (default: fix or remove the file; the config's loaders name
                ``DATASETS.SKIP_BAD_IMAGES``).
        """
        self.samples = list(samples)
        self.transform = transform
        self.cache = cache
        self.device_augment = bool(device_augment)
        self.bad_image_advice = bad_image_advice

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, pid, camid, viewid = self.samples[index]

        def produce():
            return self.transform.prepare(read_image(path, self.bad_image_advice))

        arr = self.cache.get(index, produce) if self.cache is not None else produce()
        rng = generator = None
        if seed is not None and self.transform.is_random:
            rng = random.Random(seed)
            generator = torch.Generator().manual_seed(seed)
        item = {"targets": pid, "camids": camid, "viewids": viewid, "img_paths": path}
        if not self.device_augment:
            item["images"] = self.transform.augment(arr, rng, generator)
            return item
        item["images"] = torch.from_numpy(self.transform.pre_augment(arr, rng, generator))  # AutoAugment: host
        if self.transform.is_random:
            flip, top, left, erase = self.transform.draw(rng, generator)
            item.update(aug_flip=flip, aug_crop=(top, left), aug_erase=erase or (0, 0, 0, 0),
                        # seeds the erasing fill, drawn after flip and crop as on the host
                        aug_seed=int(torch.randint(0, 2 ** 62, (1,), generator=generator).item()))
        return item


def collate_batch(items: List[Dict]) -> Dict:
    """Stack sample dicts into the batch dict of the project's contract.

    Args:
        items: dicts from :class:`ReIDImageDataset`.

    Returns:
        ``images`` (B,3,H,W) float, ``targets``/``camids``/``viewids`` int64 (B,),
        ``img_paths`` list[str]. Items of a device-augmented dataset give ``images`` (B,H,W,3)
        uint8 and, when the transform is random, ``aug_flip`` bool (B,), ``aug_crop`` int64
        (B, 2), ``aug_erase`` int64 (B, 4) (h = w = 0: no erasing) and ``aug_seed`` int64 (B,).
    """
    batch = {
        "images": torch.stack([it["images"] for it in items]),
        "targets": torch.tensor([it["targets"] for it in items], dtype=torch.int64),
        "camids": torch.tensor([it["camids"] for it in items], dtype=torch.int64),
        "viewids": torch.tensor([it["viewids"] for it in items], dtype=torch.int64),
        "img_paths": [it["img_paths"] for it in items],
    }
    if "aug_flip" in items[0]:
        for key in AUGMENT_KEYS:
            dtype = torch.bool if key == "aug_flip" else torch.int64
            batch[key] = torch.tensor([it[key] for it in items], dtype=dtype)
    return batch
