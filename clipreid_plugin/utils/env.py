"""Environment helpers: device resolution, seeding, mixed precision."""

import contextlib
import os
import random
from typing import Optional

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["resolve_device", "seed_all_rng", "resolve_amp_dtype", "autocast"]


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
                raise ConfigError("MODEL.DEVICE is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'.")
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


def resolve_amp_dtype(amp_cfg, device: torch.device):
    """The autocast dtype to train with, or None for float32.

    Args:
        amp_cfg: the ``SOLVER.AMP`` node (``ENABLED``, ``DTYPE`` "float16" | "bfloat16").
        device: the model's device.

    Returns:
        ``torch.float16``, ``torch.bfloat16`` or None. float16 autocast is a CUDA feature (the
        reference trains with it on GPUs); on a CPU it falls back to float32 with a warning, so
        the reference-derived configs also run on CPU-only machines.
    """
    if not amp_cfg.ENABLED:
        return None
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(amp_cfg.DTYPE)
    if dtype is None:
        raise ConfigError(f"SOLVER.AMP.DTYPE must be 'float16' or 'bfloat16', got {amp_cfg.DTYPE!r}.")
    if dtype == torch.float16 and device.type == "cpu":
        _warn_once(
            "SOLVER.AMP float16 needs a GPU: training in float32 on the CPU (set SOLVER.AMP.ENABLED False "
            "to silence this, or SOLVER.AMP.DTYPE bfloat16).")
        return None
    return dtype


def autocast(device_type: str, dtype: Optional[torch.dtype]):
    """Returns: ``torch.autocast(device_type, dtype)``, or a no-op context when ``dtype`` is None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


_WARNED = set()


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time only (it may be reached every step)."""
    import logging

    if message not in _WARNED:
        _WARNED.add(message)
        logging.getLogger(__name__).warning(message)
