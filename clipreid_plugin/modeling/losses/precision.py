"""Loss arithmetic in full precision, whatever the autocast state.

Under ``torch.autocast`` a matmul runs in fp16/bf16 even when its inputs were cast to fp32,
so a distance matrix computed inside autocast loses its small entries: ``clamp(min=1e-12)``
then acts as a clamp at 0, an exactly-zero diagonal gives 0/0 in the sqrt backward, and fp16
overflows at feature norms near 181. Every loss of the toolkit therefore computes its
distances, logits and reductions inside :func:`full_precision`: autocast off, half-precision
inputs up-cast to fp32. Inputs of a wider dtype (fp64 parity replays) keep their dtype.
"""

import contextlib
from typing import Iterator, Tuple

import torch

__all__ = ["full_precision", "at_least_fp32"]

_HALF = (torch.float16, torch.bfloat16)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Returns: ``x`` as fp32 if it is fp16/bf16, else unchanged (fp32, fp64, integers)."""
    return x.float() if x.dtype in _HALF else x


@contextlib.contextmanager
def full_precision(*tensors: torch.Tensor) -> Iterator[Tuple[torch.Tensor, ...]]:
    """Context manager: autocast off on the tensors' device, and the tensors up-cast to >= fp32.

    Example::

        with full_precision(feats) as (feats,):
            dist = euclidean_dist(feats, feats)

    Yields:
        The tensors, each :func:`at_least_fp32`.
    """
    device_type = tensors[0].device.type if tensors else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        yield tuple(at_least_fp32(t) for t in tensors)
