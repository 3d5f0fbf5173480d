"""Meta-architecture registry: the whole model (backbone + heads + losses)."""

import torch

from clipreid_plugin.utils.registry import Registry

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Registry for meta-architectures. A registered class is constructed as ``cls(cfg)``; its
``forward(batch)`` takes the batch dict (``images``, ``targets``, ``camids``, ``viewids``)
and returns a dict of weighted losses in training mode and the embedding (B, D) in eval mode.
"""


def build_model(cfg) -> torch.nn.Module:
    """Build the model named by ``cfg.MODEL.META_ARCHITECTURE`` on ``cfg.MODEL.DEVICE``.

    Args:
        cfg: the config (``MODEL.HEADS.NUM_CLASSES`` must be set for training).

    Returns:
        nn.Module: the model, moved to its device.
    """
    from clipreid_plugin.utils.env import resolve_device

    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    return model.to(resolve_device(cfg.MODEL.DEVICE))
