"""Environment helpers: device resolution and seeding."""

import os
import random

import numpy as np
import torch

__all__ = ["resolve_device", "seed_all_rng"]


def resolve_device(name: str) -> torch.device:
    """Map a config device string to a torch device.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

    Returns:
        torch.device. Under torch.distributed with CUDA, ``"auto"``/``"cuda"`` map to the
        process's local GPU.
    """
    if name in ("auto", "cuda"):
        if not torch.cuda.is_available():
            if name == "cuda":
                raise RuntimeError("MODEL.DEVICE is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'.")
            return torch.device("cpu")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def seed_all_rng(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) random generators.

    Args:
        seed: the seed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
