"""Reproducibility: seeding every random generator, and deterministic vs fastest kernels."""

import os
import random

import numpy as np
import torch

__all__ = ["seed_all_rng", "set_determinism"]


def seed_all_rng(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) random generators.

    Args:
        seed: the seed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def set_determinism(deterministic: bool, benchmark: bool) -> None:
    """Choose between reproducibility and speed (``DETERMINISTIC``, ``CUDNN_BENCHMARK``).

    Args:
        deterministic: deterministic algorithms everywhere (``torch.use_deterministic_algorithms``
            with warnings only for ops that have none, cuDNN deterministic, no benchmarking).
        benchmark: let cuDNN time the convolution algorithms (ignored when deterministic).
    """
    torch.backends.cudnn.deterministic = bool(deterministic)
    torch.backends.cudnn.benchmark = bool(benchmark) and not deterministic
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
