"""Backbone registry: a backbone is a function ``build_X_backbone(cfg) -> nn.Module``."""

from clipreid_plugin.utils.registry import Registry

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Registry for backbones. A registered object is called with the config and returns an
``nn.Module`` that maps images (B, 3, H, W) to features and exposes ``out_features``
(the width of its main output).
"""


def build_backbone(cfg):
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME``.

    Args:
        cfg: the config.

    Returns:
        nn.Module: the backbone.
    """
    return BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg)
