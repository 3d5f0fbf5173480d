"""Loss registry.

A loss is an ``nn.Module`` constructed as ``cls(cfg)`` and called as
``loss(outputs, targets) -> {"loss_<name>": scalar}``, where ``outputs`` is the dict the
meta-architecture produced in training (``cls_outputs``, ``triplet_features``,
``i2t_logits``, ...). Each loss reads its own weight from the config, so adding a loss is
one file plus a name in ``MODEL.LOSSES.NAMES``.
"""

from torch import nn

from clipreid_plugin.utils.registry import Registry

LOSS_REGISTRY = Registry("LOSS")


def build_losses(cfg) -> nn.ModuleList:
    """Build every loss named in ``cfg.MODEL.LOSSES.NAMES``.

    Args:
        cfg: the config.

    Returns:
        nn.ModuleList of the loss modules, in config order.
    """
    return nn.ModuleList(LOSS_REGISTRY.get(name)(cfg) for name in cfg.MODEL.LOSSES.NAMES)
