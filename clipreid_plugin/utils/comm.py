"""torch.distributed helpers that degrade to no-ops in a single process."""

import functools
from typing import Any, List

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["get_world_size", "get_rank", "get_local_rank", "is_main_process", "synchronize",
           "all_gather", "all_gather_tensor", "shared_random_seed"]

_LOCAL_RANK = 0


def is_dist() -> bool:
    """Returns: whether torch.distributed is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_world_size() -> int:
    """Returns: number of processes (1 when not distributed)."""
    return dist.get_world_size() if (dist.is_available() and dist.is_initialized()) else 1


def get_rank() -> int:
    """Returns: global rank of this process (0 when not distributed)."""
    return dist.get_rank() if (dist.is_available() and dist.is_initialized()) else 0


def set_local_rank(rank: int) -> None:
    """Record this process's rank within its machine (set by the launcher)."""
    global _LOCAL_RANK
    _LOCAL_RANK = rank


def get_local_rank() -> int:
    """Returns: rank of this process within its machine."""
    return _LOCAL_RANK


def is_main_process() -> bool:
    """Returns: True on global rank 0."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes (no-op in a single process)."""
    if is_dist():
        if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@functools.lru_cache()
def _cpu_group():
    """A gloo group for gathering arbitrary Python objects (NCCL cannot gather pickles on CPU)."""
    if dist.get_backend() == dist.Backend.NCCL:
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(obj: Any) -> List[Any]:
    """Gather a picklable object from every process.

    Args:
        obj: any picklable object.

    Returns:
        list with one entry per rank (``[obj]`` in a single process).
    """
    if not is_dist():
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj, group=_cpu_group())
    return out


def all_gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 a tensor from every process (sizes may differ across ranks).

    Args:
        t: tensor on this process's device (CPU under gloo, CUDA under NCCL).

    Returns:
        The rank-ordered concatenation (``t`` itself in a single process).
    """
    if not is_dist():
        return t
    sizes = all_gather(int(t.shape[0]))
    padded = t.new_zeros((max(sizes),) + tuple(t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


def shared_random_seed() -> int:
    """Returns: a random integer that is the same on every process (drawn on rank 0)."""
    return all_gather(int(np.random.randint(2**31)))[0]
