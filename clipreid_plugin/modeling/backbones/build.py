"""Backbone registry: a backbone is built as ``build_X_backbone(cfg) -> nn.Module`` (configurable)."""

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

__all__ = ["BACKBONE_REGISTRY", "build_backbone", "check_backbone_output"]


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
    """Returns: ``out`` after checking it is a :class:`BackboneOutput` (else TypeError naming the backbone)."""
    if not isinstance(out, BackboneOutput):
        raise TypeError(f"{type(backbone).__name__}.forward returned {type(out).__name__}; every backbone must "
                        f"return a BackboneOutput (clipreid_plugin.modeling.backbones.base).")
    return out
