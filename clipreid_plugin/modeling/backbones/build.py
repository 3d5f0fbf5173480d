"""Backbone registry: a backbone is built as ``build_X_backbone(cfg) -> nn.Module`` (configurable)."""

import torch

from clipreid_plugin.utils.errors import ConfigError
from clipreid_plugin.utils.registry import Registry

from .base import BackboneOutput

BACKBONE_REGISTRY = Registry("BACKBONE", config_keys=["MODEL.BACKBONE.NAME"])
BACKBONE_REGISTRY.__doc__ = """
Registry for backbones. A registered class or function is built as ``obj(cfg)`` (the configurable
convention, :mod:`clipreid_plugin.config.configurable`) and returns an
``nn.Module`` following the contract of :mod:`clipreid_plugin.modeling.backbones.base`:
attributes ``out_features`` (and optionally ``proj_features``, ``uses_camids``,
``uses_viewids``), and ``forward(images, camids=None, viewids=None) -> BackboneOutput``.
"""

__all__ = ["BACKBONE_REGISTRY", "build_backbone", "check_backbone_output", "check_backbone_contract"]


def build_backbone(cfg):
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME`` and check its declared widths.

    Args:
        cfg: the config.

    Returns:
        nn.Module: the backbone.

    Raises:
        ConfigError: the built object does not declare a positive ``out_features``.
    """
    name = cfg.MODEL.BACKBONE.NAME
    backbone = BACKBONE_REGISTRY.build(name, cfg, key="MODEL.BACKBONE.NAME")
    width = getattr(backbone, "out_features", None)
    if not isinstance(width, int) or width <= 0:
        raise ConfigError(f"MODEL.BACKBONE.NAME {name!r} built a {type(backbone).__name__} without a positive integer "
                          f"`out_features`; a backbone must declare the width of its feature "
                          f"(see clipreid_plugin/modeling/backbones/base.py).")
    return backbone


def check_backbone_output(out, backbone) -> BackboneOutput:
    """Returns: ``out`` after checking it is a :class:`BackboneOutput`.

    Raises:
        ConfigError: naming the backbone's class and what it returned.
    """
    if not isinstance(out, BackboneOutput):
        raise ConfigError(f"{type(backbone).__name__}.forward returned a {type(out).__name__}, not a BackboneOutput: "
                          f"every backbone returns BackboneOutput(feature, ...) "
                          f"(clipreid_plugin/modeling/backbones/base.py).")
    return out


def check_backbone_contract(backbone, cfg) -> None:
    """Check, when the model is built, that the backbone returns a :class:`BackboneOutput`: one
    forward of one blank image at ``INPUT.SIZE_TRAIN`` (camera and view 0), in eval mode and
    without gradients, on the backbone's device (a few milliseconds on a GPU, well under a
    second for a ViT-B on a CPU). Nothing of the backbone changes: batch-norm statistics are
    not updated in eval mode and its train/eval mode is restored.

    Raises:
        ConfigError: naming ``MODEL.BACKBONE.NAME``, the class and what it returned.
    """
    param = next(backbone.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    h, w = cfg.INPUT.SIZE_TRAIN
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            ids = torch.zeros(1, dtype=torch.long, device=device)
            out = backbone(torch.zeros(1, 3, int(h), int(w), device=device), ids, ids)
    finally:
        backbone.train(was_training)
    try:
        check_backbone_output(out, backbone)
    except ConfigError as e:
        raise ConfigError(f"MODEL.BACKBONE.NAME {cfg.MODEL.BACKBONE.NAME!r}: {e}") from None
