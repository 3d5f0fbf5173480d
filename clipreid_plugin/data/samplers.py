"""Training samplers: PK (identity-balanced) and plain random, both distributed and seeded.

A sampler's epoch is a pure function of (seed, epoch, rank, world_size): it builds the
*global* index list of the epoch (a whole number of global batches of SOLVER.IMS_PER_BATCH
images) with a generator seeded from (seed, epoch), and each rank takes its own contiguous
block of every global batch. Shares are therefore disjoint and of equal length on all ranks.
"""

from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from clipreid_plugin.config.configurable import configurable
from clipreid_plugin.utils.errors import ToolkitError
from clipreid_plugin.utils.registry import Registry

__all__ = ["SAMPLER_REGISTRY", "SamplerError", "ReIDSampler", "PKSampler", "RandomSampler",
           "check_batch_size"]

SAMPLER_REGISTRY = Registry("SAMPLER", training_keys=["DATALOADER.SAMPLER"])
SAMPLER_REGISTRY.__doc__ = (
    "Registry for train samplers (see ReIDSampler); built as ``cls(cfg, pids=..., camids=..., rank=..., "
    "world_size=...)``: the identity and camera of every training sample, this process and the number "
    "of processes.")


class SamplerError(ToolkitError, ValueError):
    """Batch size, instances per identity and the training set do not fit together."""


def check_batch_size(batch_size: int, world_size: int, num_instance: int = 1) -> int:
    """Check that the global batch splits into equal per-process batches of whole PK groups.

    Args:
        batch_size: SOLVER.IMS_PER_BATCH (global).
        world_size: number of processes.
        num_instance: DATALOADER.NUM_INSTANCE (1 = no PK constraint).

    Returns:
        The per-process batch size.

    Raises:
        SamplerError: naming the keys and their values.
    """
    if batch_size <= 0 or batch_size % world_size:
        raise SamplerError(f"SOLVER.IMS_PER_BATCH={batch_size} must be a positive multiple of the "
                           f"number of processes ({world_size}).")
    local = batch_size // world_size
    if local % num_instance:
        raise SamplerError(f"The per-process batch SOLVER.IMS_PER_BATCH / world size = {batch_size} / "
                           f"{world_size} = {local} must be divisible by DATALOADER.NUM_INSTANCE="
                           f"{num_instance}.")
    return local


class ReIDSampler:
    """Base class: seeded, distributed epochs of sample indices.

    Subclasses implement :meth:`global_epoch_indices`.
    """

    @configurable
    def __init__(self, *, pids: Sequence[int], batch_size: int, num_instance: int = 1, seed: int = 0,
                 rank: int = 0, world_size: int = 1, camids: Optional[Sequence[int]] = None):
        """
        Args:
            pids: identity of every training sample (index i -> pids[i]).
            batch_size: global batch size (SOLVER.IMS_PER_BATCH).
            num_instance: images per identity in a batch (DATALOADER.NUM_INSTANCE; PK only).
            seed: SOLVER.SEED.
            rank / world_size: this process and the number of processes.
            camids: camera of every training sample (for camera-aware samplers; None = unknown).
        """
        self.pids = np.asarray(pids, dtype=np.int64)
        self.camids = None if camids is None else np.asarray(camids, dtype=np.int64)
        self.batch_size = batch_size
        self.num_instance = num_instance
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.local_batch_size = check_batch_size(batch_size, world_size, self._group_size())
        self.epoch = 0

    @classmethod
    def from_config(cls, cfg, pids: Sequence[int], camids: Optional[Sequence[int]] = None, rank: int = 0,
                    world_size: int = 1) -> Dict[str, Any]:
        """Constructor arguments from ``SOLVER.IMS_PER_BATCH``, ``DATALOADER.NUM_INSTANCE`` and
        ``SOLVER.SEED``; a subclass with keys of its own extends this dict."""
        return {"pids": pids, "camids": camids, "batch_size": cfg.SOLVER.IMS_PER_BATCH,
                "num_instance": cfg.DATALOADER.NUM_INSTANCE, "seed": cfg.SOLVER.SEED, "rank": rank,
                "world_size": world_size}

    def _group_size(self) -> int:
        return 1

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0x5A3]))

    def global_epoch_indices(self, epoch: int) -> List[int]:
        """Returns: the epoch's index list over all ranks (length multiple of batch_size)."""
        raise NotImplementedError

    def epoch_indices(self, epoch: int) -> List[int]:
        """This rank's share of the epoch: its contiguous block of every global batch.

        Args:
            epoch: the epoch (any integer; 0-based by convention).

        Returns:
            Indices; their count is a multiple of the per-process batch size.
        """
        idx = np.asarray(self.global_epoch_indices(epoch), dtype=np.int64)
        blocks = idx.reshape(-1, self.world_size, self.local_batch_size)[:, self.rank]
        return blocks.reshape(-1).tolist()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that ``__iter__`` yields."""
        self.epoch = epoch

    def __iter__(self):
        return iter(self.epoch_indices(self.epoch))

    def __len__(self) -> int:
        return len(self.epoch_indices(self.epoch))


@SAMPLER_REGISTRY.register()
class PKSampler(ReIDSampler):
    """P identities x K images per batch, as the reference RandomIdentitySampler.

    Per epoch: every identity's indices are shuffled (identities with fewer than K images are
    first up-sampled to K with replacement) and cut into chunks of K (a trailing partial chunk
    is dropped); then, while at least P = batch_size / K identities still have chunks, P of
    them are drawn without replacement and contribute one chunk each. The number of batches
    can differ slightly between epochs, as in the reference.
    """

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        batch_size, num_instance = self.batch_size, self.num_instance
        self.num_pids_per_batch = batch_size // num_instance
        self.index_dict: Dict[int, np.ndarray] = {}
        groups = defaultdict(list)
        for i, pid in enumerate(self.pids.tolist()):
            groups[pid].append(i)
        self.index_dict = {pid: np.asarray(v, dtype=np.int64) for pid, v in sorted(groups.items())}
        if len(self.index_dict) < self.num_pids_per_batch:
            raise SamplerError(
                f"SOLVER.IMS_PER_BATCH={batch_size} / DATALOADER.NUM_INSTANCE={num_instance} = "
                f"{self.num_pids_per_batch} identities per batch, but the training set has only "
                f"{len(self.index_dict)} identities. Lower SOLVER.IMS_PER_BATCH or raise "
                f"DATALOADER.NUM_INSTANCE.")

    def _group_size(self) -> int:
        return self.num_instance

    def global_epoch_indices(self, epoch: int) -> List[int]:
        rng, k = self._rng(epoch), self.num_instance
        chunks = {}
        for pid, idxs in self.index_dict.items():
            if len(idxs) < k:
                idxs = rng.choice(idxs, size=k, replace=True)
            idxs = rng.permutation(idxs)
            n = len(idxs) // k
            chunks[pid] = list(idxs[: n * k].reshape(n, k))
        available = list(chunks)
        out: List[int] = []
        while len(available) >= self.num_pids_per_batch:
            picked = rng.choice(len(available), size=self.num_pids_per_batch, replace=False)
            for j in picked:
                out.extend(chunks[available[j]].pop(0).tolist())
            for j in sorted(picked.tolist(), reverse=True):  # O(1) removal of exhausted ids
                if not chunks[available[j]]:
                    available[j] = available[-1]
                    available.pop()
        return out


@SAMPLER_REGISTRY.register()
class RandomSampler(ReIDSampler):
    """A random permutation of all samples per epoch, wrapped around to whole global batches.

    The last global batch is completed with the first samples of the permutation (as
    DistributedSampler pads), so every batch is full and every rank gets the same count.
    """

    def global_epoch_indices(self, epoch: int) -> List[int]:
        perm = self._rng(epoch).permutation(len(self.pids))
        if len(perm) == 0:
            return []
        total = -(-len(perm) // self.batch_size) * self.batch_size
        return np.resize(perm, total).tolist()


def build_sampler(cfg, pids: Sequence[int], camids: Sequence[int], rank: int, world_size: int) -> ReIDSampler:
    """Build the sampler named by DATALOADER.SAMPLER.

    Args:
        cfg: the config (SOLVER.IMS_PER_BATCH, DATALOADER.NUM_INSTANCE, SOLVER.SEED, and the
            sampler's own keys).
        pids / camids: identity and camera of every training sample.
        rank / world_size: this process and the number of processes.

    Returns:
        The sampler.
    """
    return SAMPLER_REGISTRY.build(cfg.DATALOADER.SAMPLER, cfg, key="DATALOADER.SAMPLER", pids=pids, camids=camids,
                                  rank=rank, world_size=world_size)
