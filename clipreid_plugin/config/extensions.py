"""Seams through which a component extends the config without touching the core defaults.

* :func:`register_config_extension`: a function that adds a component's keys and their
  defaults. Every config built afterwards (:func:`~clipreid_plugin.config.get_cfg`) has them,
  and a config built earlier gets them when a file's ``PLUGINS`` imports the component.
* :func:`declare_data_dependent_key`: a key left empty (0 or "") that the trainer fills from
  the training data before the model is built (number of identities, cameras, views, the
  kind of object). The engine names no component's config group; components declare here.
* :func:`register_config_check`: a check of a component's keys that runs with the engine's
  validation of the whole config, before any data is read or model built.

Example (one file of a third-party loss)::

    from clipreid_plugin.config import CfgNode as CN, register_config_extension

    @register_config_extension
    def add_center_loss_config(cfg):
        cfg.MODEL.LOSSES.CENTER = CN()
        cfg.MODEL.LOSSES.CENTER.SCALE = 5e-4
"""

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

__all__ = ["register_config_extension", "apply_config_extensions", "registered_config_extensions",
           "DataInfo", "DATA_SOURCES", "declare_data_dependent_key", "data_dependent_keys",
           "fill_data_dependent_keys", "register_config_check", "registered_config_checks", "lookup_key"]

# name (module.qualname) -> function(cfg) adding keys; insertion order = application order
_EXTENSIONS: Dict[str, Callable[[Any], None]] = {}
_APPLIED_ATTR = "__applied_config_extensions__"


def register_config_extension(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Decorator: register ``fn(cfg)``, which adds a component's keys (with defaults) to ``cfg``.

    Each extension is applied once per config, in registration order; registering the same
    function again (a module imported twice) replaces it.

    Args:
        fn: called with an unfrozen config; adds keys only.

    Returns:
        ``fn`` unchanged.
    """
    _EXTENSIONS[f"{fn.__module__}.{fn.__qualname__}"] = fn
    return fn


def registered_config_extensions() -> Dict[str, Callable[[Any], None]]:
    """Returns: the registered extensions by name, in application order."""
    return dict(_EXTENSIONS)


def apply_config_extensions(cfg) -> None:
    """Apply to ``cfg`` (unfrozen, a root config) every registered extension it does not have yet.

    Args:
        cfg: the config, changed in place.
    """
    applied = cfg.__dict__.setdefault(_APPLIED_ATTR, set())
    for name, fn in list(_EXTENSIONS.items()):
        if name not in applied:
            fn(cfg)
            applied.add(name)


# name -> function(cfg, training: bool) raising ConfigError; run by the engine's validation
_CHECKS: Dict[str, Callable[[Any, bool], None]] = {}


def register_config_check(fn: Callable[[Any, bool], None]) -> Callable[[Any, bool], None]:
    """Decorator: register ``fn(cfg, training)``, which raises ``ConfigError`` for a problem in
    the component's keys (an unknown name, a value out of range). It runs before anything is
    built or read; ``training`` is False for an evaluation-only run.

    Returns:
        ``fn`` unchanged.
    """
    _CHECKS[f"{fn.__module__}.{fn.__qualname__}"] = fn
    return fn


def registered_config_checks() -> Dict[str, Callable[[Any, bool], None]]:
    """Returns: the registered config checks by name."""
    return dict(_CHECKS)


class DataInfo(NamedTuple):
    """What the training data tells the model before it is built.

    Attributes:
        num_classes: training identities (targets are 0..num_classes-1).
        num_cameras: max camera id + 1 over the training samples.
        num_views: max view id + 1 (1 when the dataset has no views).
        kind: "person" or "vehicle" when every training dataset agrees, else None.
    """

    num_classes: int
    num_cameras: int
    num_views: int
    kind: Optional[str]


DATA_SOURCES = DataInfo._fields

# full config key -> DataInfo field it is filled from
_DATA_KEYS: Dict[str, str] = {}


def declare_data_dependent_key(key: str, source: str) -> None:
    """Declare that config key ``key``, when left empty (0 or ""), is filled from the training data.

    Args:
        key: full dotted key, e.g. ``"MODEL.BACKBONE.CLIP.NUM_CAMERAS"``.
        source: a :class:`DataInfo` field: ``num_classes``, ``num_cameras``, ``num_views`` or
            ``kind``.

    Raises:
        ValueError: an unknown source (a programming error of the component).
    """
    if source not in DATA_SOURCES:
        raise ValueError(f"declare_data_dependent_key({key!r}, {source!r}): source must be one of "
                         f"{', '.join(DATA_SOURCES)}.")
    _DATA_KEYS[key] = source


def data_dependent_keys() -> Dict[str, str]:
    """Returns: ``{full key: DataInfo field}`` of every declared key."""
    return dict(_DATA_KEYS)


def lookup_key(cfg, key: str) -> Tuple[Optional[dict], Optional[str]]:
    """Find a full dotted key in a config, or in any nested dict (e.g. a config read as YAML).

    Args:
        cfg: a CfgNode or a dict of dicts.
        key: full dotted key, e.g. ``"MODEL.HEADS.NUM_CLASSES"``.

    Returns:
        ``(node, leaf)`` with ``node[leaf]`` the key's value (assignable), or ``(None, None)``
        when the key is absent (a part is missing or the path runs through a non-dict value).
    """
    node = cfg
    *path, leaf = key.split(".")
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None, None
        node = node[part]
    return (node, leaf) if isinstance(node, dict) and leaf in node else (None, None)


def fill_data_dependent_keys(cfg, info: DataInfo):
    """A copy of ``cfg`` with every declared key that is empty (0 or "") set from ``info``.

    Keys a config does not have (a plugin that is not loaded) are skipped, as are values the
    data does not know (``kind`` None).

    Args:
        cfg: the config.
        info: what the training data says.

    Returns:
        A frozen copy of ``cfg``.
    """
    cfg = cfg.clone()
    cfg.defrost()
    for key, source in _DATA_KEYS.items():
        node, leaf = lookup_key(cfg, key)
        value = getattr(info, source)
        if node is None or value is None or node[leaf] not in (0, ""):
            continue
        node[leaf] = type(node[leaf])(value)
    cfg.freeze()
    return cfg
