"""Loss registry.

A loss is an ``nn.Module`` constructed as ``cls(cfg)`` (the configurable convention,
:mod:`clipreid_plugin.config.configurable`) and called as
``loss(outputs, targets) -> {"loss_<name>": scalar}``, where ``outputs`` is the dict the
meta-architecture produced in training. Every meta-architecture's dict has ``feat`` (B, D):
the main pre-BN feature, D = ``MODEL.BACKBONE.FEAT_DIM`` (filled from the built backbone), and
``cls_outputs`` / ``triplet_features``; CLIP-ReID adds ``i2t_logits``. Each loss reads its own
weight from the config; a loss with keys of its own registers them
(:func:`~clipreid_plugin.config.register_config_extension`), and a loss with parameters may
give them a parameter group of their own (``optimizer_overrides``, see
:mod:`clipreid_plugin.solver.optimizer`). Adding a loss is one file plus its name in
``MODEL.LOSSES.NAMES``.

A loss that consumes one output list declares it as ``reads`` (``"cls_outputs"`` or
``"triplet_features"``): a multi-branch meta-architecture (MGN) then calls it once per branch
with a one-entry list and weights each result.
"""

from torch import nn

from clipreid_plugin.utils.registry import Registry

__all__ = ["LOSS_REGISTRY", "build_losses"]

LOSS_REGISTRY = Registry("LOSS", training_keys=["MODEL.LOSSES.NAMES"])


def build_losses(cfg, feat_dim: int = 0) -> nn.ModuleList:
    """Build every loss named in ``cfg.MODEL.LOSSES.NAMES``.

    Args:
        cfg: the config.
        feat_dim: width of the model's ``feat``; set as ``MODEL.BACKBONE.FEAT_DIM`` of the
            config the losses see when that key is 0.

    Returns:
        nn.ModuleList of the loss modules, in config order.
    """
    if feat_dim and cfg.MODEL.BACKBONE.FEAT_DIM == 0:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.BACKBONE.FEAT_DIM = int(feat_dim)
        cfg.freeze()
    return nn.ModuleList(LOSS_REGISTRY.build(name, cfg, key="MODEL.LOSSES.NAMES") for name in cfg.MODEL.LOSSES.NAMES)
