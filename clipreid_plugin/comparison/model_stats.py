"""Model statistics for the comparison table: parameters, GFLOPs per image, inference images/s.

GFLOPs follow fvcore's convention (one fused multiply-add counts as one flop, as in the ReID and
detection literature). ``nn.MultiheadAttention`` runs through ``aten::scaled_dot_product_attention``,
which fvcore does not count (PITFALLS 10); :func:`sdpa_flop_jit` counts its two matrix products.
"""

import logging
import time
import warnings
from typing import Any, List, Sequence

import torch
from torch import nn

from clipreid_plugin.utils.checkpoint import unwrap_model

__all__ = ["count_parameters", "sdpa_flop_jit", "gflops_per_image", "images_per_second"]

logger = logging.getLogger(__name__)


def count_parameters(model: nn.Module) -> int:
    """Returns: the number of parameters of ``model`` (trainable or not; shared ones once)."""
    return sum(p.numel() for p in unwrap_model(model).parameters())


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``.

    ``softmax(q k^T) v`` with q (..., L, E), k (..., S, E), v (..., S, Ev) costs
    ``prod(batch) * L * S * (E + Ev)`` multiply-adds; softmax and scaling are not counted
    (as fvcore does not count element-wise ops by default).

    Args:
        inputs, outputs: the traced node's inputs / outputs (fvcore's handle signature).

    Returns:
        The flop count.
    """
    from fvcore.nn.jit_handles import get_shape  # noqa: PLC0415 - see count_gflops: fvcore.nn only when counting

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for s in q[:-2]:
        batch *= s
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


class _ImagesOnly(nn.Module):
    """Wraps a meta-architecture so fvcore can trace it from an image tensor alone (camera/view 0)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        ids = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        return self.model({"images": images, "camids": ids, "viewids": ids})


def _input(model: nn.Module, image_size: Sequence[int], batch: int) -> torch.Tensor:
    p = next(model.parameters())
    return torch.randn(batch, 3, int(image_size[0]), int(image_size[1]), device=p.device, dtype=p.dtype)


def gflops_per_image(model: nn.Module, image_size: Sequence[int]) -> float:
    """Count the eval-mode forward pass of one image with fvcore.

    Args:
        model: a meta-architecture (``forward(batch) -> embedding`` in eval mode).
        image_size: (H, W) of the test images.

    Returns:
        GFLOPs (fused multiply-adds, 1e9) per image.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore.nn imports torch.jit.script (PITFALLS 10); tracer warnings
        from fvcore.nn import FlopCountAnalysis  # noqa: PLC0415 - fvcore.nn is slow to import and warns; only GFLOPs need it

        model = unwrap_model(model)
        was_training = model.training
        model.eval()
        try:
            analysis = FlopCountAnalysis(_ImagesOnly(model), (_input(model, image_size, 1),))
            analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            total = analysis.total()
            skipped = analysis.unsupported_ops()
        finally:
            model.train(was_training)
    if skipped:
        # for the log file only: the list is long and says nothing a reader of the table needs
        logger.debug(f"GFLOPs: ops fvcore does not count (mostly element-wise): {dict(skipped)}")
    return total / 1e9


@torch.no_grad()
def images_per_second(model: nn.Module, image_size: Sequence[int], batch_size: int, min_iters: int = 3,
                      min_seconds: float = 1.0) -> float:
    """Inference throughput of the eval-mode forward pass on random images, on the model's device.

    Measures the model only (no data loading, no flip test). One untimed warm-up batch, then
    batches until both ``min_iters`` and ``min_seconds`` are reached.

    Args:
        model: a meta-architecture.
        image_size: (H, W).
        batch_size: images per forward pass (TEST.IMS_PER_BATCH).
        min_iters, min_seconds: how long to measure.

    Returns:
        Images per second.
    """
    model = unwrap_model(model)
    was_training = model.training
    model.eval()
    wrapped = _ImagesOnly(model)
    x = _input(model, image_size, batch_size)

    def sync():
        if x.is_cuda:
            torch.cuda.synchronize(x.device)

    try:
        wrapped(x)
        sync()
        n, start = 0, time.perf_counter()
        while n < min_iters or time.perf_counter() - start < min_seconds:
            wrapped(x)
            sync()
            n += 1
        elapsed = time.perf_counter() - start
    finally:
        model.train(was_training)
    return n * batch_size / elapsed
