"""Head registry: a head maps backbone features to embeddings and class scores."""

from clipreid_plugin.utils.registry import Registry

HEAD_REGISTRY = Registry("HEAD")
HEAD_REGISTRY.__doc__ = "Registry for heads; a registered class is constructed as ``cls(cfg, in_dim)``."


def build_heads(cfg, in_dim: int):
    """Build the head named by ``cfg.MODEL.HEADS.NAME``.

    Args:
        cfg: the config.
        in_dim: width of the backbone feature the head receives.

    Returns:
        nn.Module: the head.
    """
    return HEAD_REGISTRY.get(cfg.MODEL.HEADS.NAME)(cfg, in_dim)
