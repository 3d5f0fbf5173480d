"""Meta-architecture registry: the whole model (backbone + heads + losses)."""

import logging

import torch

from clipreid_plugin.utils.device import resolve_device
from clipreid_plugin.utils.errors import ConfigError
from clipreid_plugin.utils.registry import Registry

from ..backbones import check_backbone_contract

__all__ = ["META_ARCH_REGISTRY", "build_model", "weights_replace_pretrained"]

META_ARCH_REGISTRY = Registry("META_ARCH", config_keys=["MODEL.META_ARCHITECTURE"])
META_ARCH_REGISTRY.__doc__ = """
Registry for meta-architectures. A registered class is constructed as ``cls(cfg)``; its
``forward(batch)`` takes the batch dict (``images``, ``targets``, ``camids``, ``viewids``)
and returns a dict of weighted losses in training mode and the embedding (B, D) in eval mode.
"""


def weights_replace_pretrained(cfg) -> bool:
    """Whether ``MODEL.WEIGHTS`` will overwrite every tensor, so no pretrained file need be read.

    True when weights are given and partial loading is off (``MODEL.ALLOW_PARTIAL_WEIGHTS``
    False: a file that does not fill the whole model is then an error). Components that read
    pretrained files of their own (a plugin's text tower, say) follow the same rule, as fast-reid
    skips its pretrain file when weights are given: a checkpoint is usable on its own.
    """
    return bool(cfg.MODEL.WEIGHTS) and not cfg.MODEL.ALLOW_PARTIAL_WEIGHTS


def build_model(cfg) -> torch.nn.Module:
    """Build the model named by ``cfg.MODEL.META_ARCHITECTURE`` on ``cfg.MODEL.DEVICE``.

    With ``MODEL.WEIGHTS`` holding every tensor (:func:`weights_replace_pretrained`) the
    backbone's pretrained file (``MODEL.BACKBONE.PRETRAIN_PATH``) is not read. A convolutional
    backbone on a GPU is put in channels-last format (``MODEL.CHANNELS_LAST``).

    Args:
        cfg: the config (``MODEL.HEADS.NUM_CLASSES`` must be set for training).

    Returns:
        nn.Module: the model, moved to its device.
    """
    if weights_replace_pretrained(cfg) and cfg.MODEL.BACKBONE.PRETRAIN:
        logging.getLogger(__name__).info(f"MODEL.WEIGHTS ({cfg.MODEL.WEIGHTS}) holds every tensor: the pretrained "
                                         f"backbone file is not read.")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.BACKBONE.PRETRAIN = False
        cfg.freeze()
    model = META_ARCH_REGISTRY.build(cfg.MODEL.META_ARCHITECTURE, cfg, key="MODEL.META_ARCHITECTURE")
    device = resolve_device(cfg.MODEL.DEVICE)
    model = model.to(device)
    backbone = getattr(model, "backbone", None)
    # A registered backbone (it declares out_features) that breaks the output contract stops here,
    # not at the first step; MGN keeps only the stem of one under `backbone`, which is no backbone.
    if backbone is not None and hasattr(backbone, "out_features"):
        check_backbone_contract(backbone, cfg)
    mode = cfg.MODEL.CHANNELS_LAST
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"MODEL.CHANNELS_LAST must be 'auto', 'on' or 'off', got {mode!r}.")
    if backbone is not None and (mode == "on" or (mode == "auto" and device.type == "cuda"
                                                  and getattr(backbone, "prefers_channels_last", False))):
        model = model.to(memory_format=torch.channels_last)
        backbone.input_memory_format = torch.channels_last
    return model
