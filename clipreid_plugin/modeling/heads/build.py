"""Head registry: a head maps backbone features to embeddings and class scores.

A head class may declare ``HEAD_KIND``: ``"feature"`` (the default; built as ``cls(cfg, in_dim=...)``
and called on the backbone's feature) or another kind such as the CLIP-ReID plugin's
``"text"`` heads, which map identity labels to text features. A meta-architecture asks for
the kind it can use, so a head of the wrong kind fails when the model is built.
"""

from clipreid_plugin.utils.errors import ConfigError
from clipreid_plugin.utils.registry import Registry

__all__ = ["HEAD_REGISTRY", "build_heads", "build_head"]

HEAD_REGISTRY = Registry("HEAD", config_keys=["MODEL.HEADS.NAME"])
HEAD_REGISTRY.__doc__ = ("Registry for heads; a registered class is constructed as ``cls(cfg, in_dim=...)`` (the "
                         "configurable convention), ``in_dim`` being the width of the feature it receives.")


def build_head(name: str, cfg, in_dim: int, kind: str = "feature", key: str = "MODEL.HEADS.NAME", **kwargs):
    """Build the head registered as ``name`` after checking it is of ``kind``.

    Args:
        name: registered head name.
        cfg: the config.
        in_dim: width of the feature the head receives.
        kind: the ``HEAD_KIND`` the caller needs.
        key: the config key that named the head (for messages).
        **kwargs: extra constructor arguments.

    Returns:
        nn.Module: the head.

    Raises:
        ConfigError: the head is of another kind.
    """
    cls = HEAD_REGISTRY.get_for_key(name, key, cfg)
    found = getattr(cls, "HEAD_KIND", "feature")
    if found != kind:
        raise ConfigError(f"{key} {name!r} is a {found!r} head, but {cfg.MODEL.META_ARCHITECTURE} needs a {kind!r} "
                          f"head here (e.g. EmbeddingHead for backbone features).")
    return cls(cfg, in_dim=in_dim, **kwargs)


def build_heads(cfg, in_dim: int):
    """Build the feature head named by ``cfg.MODEL.HEADS.NAME``.

    Args:
        cfg: the config.
        in_dim: width of the backbone feature the head receives.

    Returns:
        nn.Module: the head.
    """
    return build_head(cfg.MODEL.HEADS.NAME, cfg, in_dim)
