"""Loaders the trainer and evaluators call: train (PK batches), test (query + gallery), and a
plain inference loader over any list of samples (what a training phase that embeds the
training images, such as CLIP-ReID's stage 1, uses).

Determinism: the content of train epoch ``e`` (sample order and every random augmentation)
is a function of (SOLVER.SEED, e, rank, world size) only. The sampler draws the order from
a generator seeded by (seed, e); each sample gets its own seed from
``SeedSequence([seed, e, rank, world_size])`` and position; workers never use global or
worker-specific random state. So ``--resume`` at epoch ``e`` reproduces the same batches
whatever NUM_WORKERS is and whatever ran before in the process.

With INPUT.DEVICE_AUGMENT the workers return resized uint8 images and each sample's random
draws (made with the same per-sample generators, in the same order); flip, pad + crop,
normalisation and random erasing run on the model's device as the loader yields each batch
(:mod:`.device_augment`), and the erasing fill is seeded from the batch's draws: the contract
above still holds.
"""

import logging
import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader

from clipreid_plugin.config import DataInfo, as_name_list
from clipreid_plugin.utils import comm
from clipreid_plugin.utils.device import resolve_device

from .image_dataset import SKIP_ADVICE, ReIDImageDataset, collate_batch, drop_unreadable
from .datasets import DATASET_REGISTRY, DatasetError, ReIDDataset
from .datasets.bases import Sample, test_splits_only
from .decode_cache import build_decode_cache
from .device_augment import DeviceBatches, DeviceTransform
from .samplers import build_sampler, check_batch_size
from .transforms import build_transforms

__all__ = ["TrainLoader", "build_reid_train_loader", "build_reid_test_loader", "build_inference_loader",
           "build_train_samples", "train_data_info"]

logger = logging.getLogger(__name__)


def _loader_kwargs(cfg) -> dict:
    """DataLoader options from the DATALOADER keys (worker options only when workers are used)."""
    d = cfg.DATALOADER
    kw = dict(num_workers=d.NUM_WORKERS, collate_fn=collate_batch,
              pin_memory=bool(d.PIN_MEMORY and torch.cuda.is_available()))
    if d.NUM_WORKERS > 0:
        kw.update(persistent_workers=d.PERSISTENT_WORKERS, prefetch_factor=d.PREFETCH_FACTOR)
    return kw


def _image_dataset(cfg, samples: Sequence[Sample], is_train: bool, purpose: str) -> ReIDImageDataset:
    transform = build_transforms(cfg, is_train)
    cache = build_decode_cache(cfg.DATALOADER.DECODE_CACHE, [s[0] for s in samples],
                               transform.size, f"{purpose}-{transform.cache_key}", cfg.OUTPUT_DIR,
                               comm.get_rank())
    return ReIDImageDataset(samples, transform, cache, device_augment=cfg.INPUT.DEVICE_AUGMENT,
                            bad_image_advice=SKIP_ADVICE)


def _device_transform(cfg, image_ds: ReIDImageDataset) -> Optional[DeviceTransform]:
    """The device half of the transform with INPUT.DEVICE_AUGMENT (None without it)."""
    if not image_ds.device_augment:
        return None
    return DeviceTransform(image_ds.transform, resolve_device(cfg.MODEL.DEVICE))


def build_train_samples(cfg) -> Tuple[List[Sample], List[ReIDDataset]]:
    """Combine the train splits of every dataset in DATASETS.NAMES.

    With one dataset its pids (already 0..C-1) and camids are kept. With several, identities
    and cameras are made distinct per dataset (keys ``(dataset, pid)`` / ``(dataset, camid)``,
    like fast-reid's ``market1501_12``) and relabelled 0..C-1 in (config order, pid) order.
    View ids are kept. With DATASETS.SKIP_BAD_IMAGES unreadable images are dropped first.

    Args:
        cfg: the config.

    Returns:
        (samples, dataset objects).
    """
    names = as_name_list(cfg.DATASETS.NAMES)
    if not names:
        raise DatasetError("DATASETS.NAMES is empty; name at least one registered dataset "
                           f"({', '.join(DATASET_REGISTRY.names())}).")
    datasets = [DATASET_REGISTRY.build(n, cfg, key="DATASETS.NAMES") for n in names]
    keyed = []
    for k, ds in enumerate(datasets):
        if comm.is_main_process():
            ds.show_summary()
        train = ds.train
        if cfg.DATASETS.SKIP_BAD_IMAGES:
            train = drop_unreadable(train, f"{ds.name} train")
        single = len(datasets) == 1
        keyed += [(p, pid if single else (k, pid), cam if single else (k, cam), view)
                  for p, pid, cam, view in train]
    if not keyed:
        raise DatasetError(f"No readable training image in {', '.join(names)}.")
    pid_map = {v: i for i, v in enumerate(sorted({s[1] for s in keyed}))}
    cam_map = ({v: i for i, v in enumerate(sorted({s[2] for s in keyed}))} if len(datasets) > 1
               else None)
    samples = [(p, pid_map[pid], cam_map[cam] if cam_map else cam, view)
               for p, pid, cam, view in keyed]
    return samples, datasets


def train_data_info(samples: Sequence[Sample], datasets: Sequence[ReIDDataset]) -> DataInfo:
    """What the training data tells the model: identities, cameras, views, kind of object.

    Args:
        samples: :func:`build_train_samples`'s samples (pids 0..C-1).
        datasets: its dataset objects.

    Returns:
        DataInfo (kind None unless every training dataset agrees).
    """
    kinds = {ds.kind for ds in datasets}
    return DataInfo(len({s[1] for s in samples}), max(s[2] for s in samples) + 1, max(s[3] for s in samples) + 1,
                    kinds.pop() if len(kinds) == 1 else None)


class _EpochBatches:
    """The DataLoader's batch sampler: batches of ``(index, sample_seed)`` of the current epoch."""

    def __init__(self, sampler, batch_size: int, seed: int, rank: int, world_size: int):
        self.sampler, self.batch_size = sampler, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        idx = self.sampler.epoch_indices(epoch)
        seeds = np.random.SeedSequence(
            [self.seed, epoch, self.rank, self.world_size, 0xA06]).generate_state(len(idx), np.uint64)
        keyed = list(zip(idx, (int(s) for s in seeds)))
        self.batches = [keyed[i:i + self.batch_size] for i in range(0, len(keyed), self.batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TrainLoader:
    """One epoch of training batches per iteration; call :meth:`set_epoch` before each epoch.

    Attributes:
        num_classes: training identities (targets are 0..num_classes-1).
        num_cameras / num_views: max camid / viewid + 1 over the training samples.
        dataset: the combined list of training samples ``(path, pid, camid, viewid)``.
        datasets: the dataset objects of DATASETS.NAMES.
        data_info: :class:`~clipreid_plugin.config.DataInfo` (classes, cameras, views, kind of
            object), from which the trainer fills the data-dependent config keys.
        sampler: the ReIDSampler.
        device_transform: the device half of the transform (INPUT.DEVICE_AUGMENT), or None.
    """

    def __init__(self, cfg, samples: List[Sample], datasets: List[ReIDDataset]):
        """
        Args:
            cfg: the config.
            samples: output of :func:`build_train_samples`.
            datasets: the dataset objects.
        """
        rank, world = comm.get_rank(), comm.get_world_size()
        self.dataset = samples
        self.datasets = datasets
        self.data_info = train_data_info(samples, datasets)
        self.num_classes, self.num_cameras, self.num_views = self.data_info[:3]
        self.sampler = build_sampler(cfg, [s[1] for s in samples], [s[2] for s in samples], rank, world)
        self.image_dataset = _image_dataset(cfg, samples, True, "train")
        self.device_transform = _device_transform(cfg, self.image_dataset)
        self._batches = _EpochBatches(self.sampler, self.sampler.local_batch_size, cfg.SOLVER.SEED,
                                      rank, world)
        # A private generator: creating worker iterators must not consume the global RNG.
        self._loader = DataLoader(self.image_dataset, batch_sampler=self._batches,
                                  generator=torch.Generator().manual_seed(cfg.SOLVER.SEED),
                                  **_loader_kwargs(cfg))
        if self.device_transform is not None:
            self._loader = DeviceBatches(self._loader, self.device_transform)

    @property
    def epoch(self) -> int:
        """Returns: the epoch that iterating yields."""
        return self._batches.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (any integer) that the next iteration yields."""
        self._batches.set_epoch(epoch)

    def __iter__(self):
        return iter(self._loader)

    def __len__(self) -> int:
        """Returns: iterations in the current epoch (PK epochs can differ by a batch or two)."""
        return len(self._batches)


def build_reid_train_loader(cfg) -> TrainLoader:
    """Build the training loader of DATASETS.NAMES (see :class:`TrainLoader`).

    Args:
        cfg: the config (DATASETS, INPUT, DATALOADER, SOLVER.IMS_PER_BATCH, SOLVER.SEED).

    Returns:
        TrainLoader over epoch 0 until ``set_epoch`` is called.
    """
    samples, datasets = build_train_samples(cfg)
    loader = TrainLoader(cfg, samples, datasets)
    logger.info(f"Train loader: {len(samples)} images, {loader.num_classes} identities, "
                f"{loader.num_cameras} cameras, {len(loader)} iterations in the first epoch.")  # epochs count from 1 in the log
    return loader


def _shard(items: List, rank: int, world: int) -> List:
    per = math.ceil(len(items) / world)
    return items[rank * per:(rank + 1) * per]


def build_inference_loader(cfg, samples: Sequence[Sample], batch_size: int,
                           purpose: str) -> Union[DataLoader, DeviceBatches]:
    """A loader over ``samples`` in their order, with the test transform (no augmentation).

    Args:
        cfg: the config (INPUT, DATALOADER).
        samples: ``(path, pid, camid, viewid)`` tuples.
        batch_size: images per batch.
        purpose: a short name for the decode cache (e.g. "test-Market1501").

    Returns:
        DataLoader yielding batch dicts (``images``, ``targets``, ``camids``, ``viewids``,
        ``img_paths``); with INPUT.DEVICE_AUGMENT a :class:`DeviceBatches` over it whose
        ``images`` are normalised on the model's device.
    """
    image_ds = _image_dataset(cfg, samples, False, purpose)
    loader = DataLoader(image_ds, batch_size=batch_size, shuffle=False, drop_last=False, **_loader_kwargs(cfg))
    device_transform = _device_transform(cfg, image_ds)
    return loader if device_transform is None else DeviceBatches(loader, device_transform)


def build_reid_test_loader(cfg, dataset_name: str) -> Tuple[Union[DataLoader, DeviceBatches], int]:
    """Build the loader over query then gallery of one dataset (test transform, fixed order).

    Under torch.distributed each rank gets a contiguous, disjoint shard of the concatenated
    list (rank 0 the first images); gathering the ranks' outputs in rank order restores it.
    Targets are raw pids. For datasets with ``random_gallery`` (VehicleID) the whole test split
    is returned with num_query = 0.

    Args:
        cfg: the config (TEST.IMS_PER_BATCH is the global batch).
        dataset_name: a registered dataset name.

    Returns:
        (loader, num_query) where num_query counts queries in the full, unsharded list.
    """
    with test_splits_only():  # evaluation reads no training image
        ds = DATASET_REGISTRY.build(dataset_name, cfg, key="DATASETS.TESTS")
    if comm.is_main_process():
        ds.show_summary(("query", "gallery"))
    rank, world = comm.get_rank(), comm.get_world_size()
    batch = check_batch_size(cfg.TEST.IMS_PER_BATCH, world)
    if ds.random_gallery:
        query, gallery = ds.test_items(), []
    else:
        query, gallery = list(ds.query), list(ds.gallery)
    if cfg.DATASETS.SKIP_BAD_IMAGES:
        query = drop_unreadable(query, f"{ds.name} query")
        gallery = drop_unreadable(gallery, f"{ds.name} gallery")
    loader = build_inference_loader(cfg, _shard(query + gallery, rank, world), batch, f"test-{ds.name}")
    return loader, (0 if ds.random_gallery else len(query))
