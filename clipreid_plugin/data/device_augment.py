"""Device-side augmentation (``INPUT.DEVICE_AUGMENT``): flip, pad + crop, normalisation and
random erasing of whole uint8 batches on the model's device.

With the key on, the loader workers only decode and resize (or read the decode cache) and
draw each sample's random numbers with the sample's own generators, in the host path's order
(:meth:`~clipreid_plugin.data.transforms.ReIDTransform.draw`): the same seeds give the same
flips, crop offsets and erased rectangles on both paths. Batches travel as uint8 (four times
fewer bytes than float32), pinned by the DataLoader (``DATALOADER.PIN_MEMORY``) and copied to the
device without blocking; :class:`DeviceTransform` then applies every draw to the whole batch
at once. Test and inference loaders only normalise on the device.

Determinism: a constant erasing fill (fast-reid's ``INPUT.REA.VALUE``) is the host path's. The
per-pixel N(0, 1) fill (timm's ``mode='pixel'``) is drawn on the device from a generator seeded
by the batch's ``aug_seed`` values, themselves drawn from the samples' generators. An epoch
therefore stays a function of (seed, epoch, rank, world size) whatever the number of workers.
Those noise values are not the host path's (they come from the device's generator, for the
whole batch at once), only their distribution is; everything else is bit-identical to the host
path on the same device type.
"""

from typing import Dict, Iterable, Iterator, Optional

import numpy as np
import torch

from .transforms import ReIDTransform, normalize_uint8

__all__ = ["DeviceTransform", "DeviceBatches", "AUGMENT_KEYS"]

# batch entries that carry a sample's random draws from the workers to the device
AUGMENT_KEYS = ("aug_flip", "aug_crop", "aug_erase", "aug_seed")


def _batch_seed(seeds: torch.Tensor) -> int:
    """One 64-bit seed from the per-sample ``aug_seed`` values (a host tensor: no device sync)."""
    return int(np.random.SeedSequence([int(s) for s in seeds.tolist()]).generate_state(1, np.uint64)[0])


class DeviceTransform:
    """The device half of a transform: uint8 (B, H, W, 3) batches in, normalised float32
    (B, 3, H, W) batches on ``device`` out.

    Call it on a batch of :func:`~clipreid_plugin.data.image_dataset.collate_batch` from a
    device-augmented :class:`~clipreid_plugin.data.image_dataset.ReIDImageDataset`. No step waits for
    the device: every decision is read from host tensors, every copy is non-blocking.

    Args:
        transform: the transform the workers prepared with (its size, padding, mean and std).
        device: where the batch goes (the model's device).
    """

    def __init__(self, transform: ReIDTransform, device):
        self.device = torch.device(device)
        self.size = transform.size
        self.padding = transform.padding
        self.mean = transform.mean.to(self.device)
        self.std = transform.std.to(self.device)
        # a constant erasing fill (fast-reid's INPUT.REA.VALUE), else None: N(0, 1) noise
        value = transform.erasing.value if transform.erasing is not None else None
        self.erase_value = None if value is None else value.view(1, -1, 1, 1).to(self.device)
        self._generator: Optional[torch.Generator] = None

    def _flip_pad_crop(self, x: torch.Tensor, flip: torch.Tensor, crop: torch.Tensor) -> torch.Tensor:
        """Flip, zero-pad by ``padding`` and crop back at ``crop`` (top, left), per sample: two gathers.

        Output pixel (y, x) of sample b is pixel (y + top, c) of the zero-padded image, with
        c = x + left, or W + 2 pad - 1 - c when flipped (mirroring the padded image is padding
        the mirrored one: the padding is symmetric).
        """
        b, h, w, ch = x.shape
        p = self.padding
        dev = x.device
        padded = torch.nn.functional.pad(x, (0, 0, p, p, p, p))  # (B, H + 2p, W + 2p, 3)
        rows = (crop[:, :1] + torch.arange(h, device=dev)).view(b, h, 1, 1)
        x = torch.gather(padded, 1, rows.expand(b, h, w + 2 * p, ch))
        cols = crop[:, 1:] + torch.arange(w, device=dev)  # (B, W)
        cols = torch.where(flip[:, None], w + 2 * p - 1 - cols, cols)
        return torch.gather(x, 2, cols.view(b, 1, w, 1).expand(b, h, w, ch))

    def _erase(self, x: torch.Tensor, erase: torch.Tensor, seed: int) -> torch.Tensor:
        """Replace each sample's (top, left, h, w) rectangle by N(0, 1) noise or the constant fill."""
        if self.erase_value is not None:
            fill = self.erase_value.to(x.dtype)
        else:
            if self._generator is None:
                self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(seed)
            fill = torch.randn(x.shape, generator=self._generator, device=self.device, dtype=x.dtype)
        rect = erase.to(self.device, non_blocking=True)
        top, left, h, w = (rect[:, i].view(-1, 1) for i in range(4))
        ys = torch.arange(x.shape[2], device=self.device)
        xs = torch.arange(x.shape[3], device=self.device)
        inside = (((ys >= top) & (ys < top + h))[:, None, :, None]
                  & ((xs >= left) & (xs < left + w))[:, None, None, :])
        return torch.where(inside, fill, x)

    def __call__(self, batch: Dict) -> Dict:
        """Apply the batch's draws on the device.

        Args:
            batch: ``images`` uint8 (B, H, W, 3) and, for a training batch, the ``aug_*``
                entries of :func:`~clipreid_plugin.data.image_dataset.collate_batch`.

        Returns:
            The batch with ``images`` float32 (B, 3, H, W) normalised on the device and without
            the ``aug_*`` entries (the other entries are unchanged).

        Raises:
            ValueError: ``images`` is not a uint8 (B, H, W, 3) batch of the transform's size.
        """
        images = batch["images"]
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:3]) != self.size:
            raise ValueError(f"DeviceTransform expects uint8 (B, {self.size[0]}, {self.size[1]}, 3) images, got "
                             f"{images.dtype} {tuple(images.shape)}.")
        out = {k: v for k, v in batch.items() if k not in AUGMENT_KEYS}
        x = images.to(self.device, non_blocking=True)
        if "aug_flip" in batch:
            x = self._flip_pad_crop(x, batch["aug_flip"].to(self.device, non_blocking=True),
                                    batch["aug_crop"].to(self.device, non_blocking=True))
        x = normalize_uint8(x.permute(0, 3, 1, 2), self.mean, self.std)
        erase = batch.get("aug_erase")
        if erase is not None and bool((erase[:, 2] > 0).any()):  # a host tensor: no device sync
            x = self._erase(x, erase, _batch_seed(batch["aug_seed"]))
        out["images"] = x
        return out


class DeviceBatches:
    """A loader whose batches pass through a :class:`DeviceTransform` (what the inference
    loaders return, and what the train loader iterates, with ``INPUT.DEVICE_AUGMENT``). ``len``
    and any other attribute are the wrapped loader's.

    Args:
        loader: the DataLoader (yielding uint8 batches).
        transform: the device transform.
    """

    def __init__(self, loader: Iterable, transform: DeviceTransform):
        self.loader = loader
        self.transform = transform

    def __iter__(self) -> Iterator[Dict]:
        return map(self.transform, iter(self.loader))

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        if name in ("loader", "transform"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.loader, name)
