"""Where and in which precision a run computes: the device (``MODEL.DEVICE``), the autocast dtype of
training (``SOLVER.AMP``) and of extraction (``TEST.PRECISION``), and the autocast context."""

import contextlib
import logging
from typing import Optional

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "resolve_dtype", "resolve_amp_dtype", "autocast"]


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


def resolve_dtype(name: str, device: torch.device, key: str) -> Optional[torch.dtype]:
    """The autocast dtype for ``"float32"`` / ``"float16"`` / ``"bfloat16"`` (None = float32).

    float16 autocast is a GPU feature: on a CPU it falls back to float32 with a warning.

    Args:
        name: the config value.
        device: where the model runs.
        key: the config key, for messages.
    """
    dtypes = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise ConfigError(f"{key} must be 'float32', 'float16' or 'bfloat16', got {name!r}.")
    dtype = dtypes[name]
    if dtype == torch.float16 and device.type == "cpu":
        _warn_once(f"{key} float16 needs a GPU: running in float32 on the CPU (use bfloat16 there).")
        return None
    return dtype


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
    if amp_cfg.DTYPE not in ("float16", "bfloat16"):
        raise ConfigError(f"SOLVER.AMP.DTYPE must be 'float16' or 'bfloat16', got {amp_cfg.DTYPE!r}.")
    return resolve_dtype(amp_cfg.DTYPE, device, "SOLVER.AMP.DTYPE")


def autocast(device_type: str, dtype: Optional[torch.dtype]):
    """Returns: ``torch.autocast(device_type, dtype)``, or a no-op context when ``dtype`` is None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


_WARNED = set()


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time only (it may be reached every step)."""
    if message not in _WARNED:
        _WARNED.add(message)
        logging.getLogger(__name__).warning(message)
