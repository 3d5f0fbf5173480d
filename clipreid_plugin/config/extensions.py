"""Seams through which a component extends the config without touching the core defaults.

* :func:`register_config_extension`: a function that adds a component's keys and their
  defaults. The host's extensions apply to every config; a plugin's apply only to a config whose
  ``PLUGINS`` names the plugin (it is *active* there), and may only add top-level groups of its
  own (``cfg.CENTER_LOSS = CN()``), never keys inside the host's groups.
* :func:`declare_data_dependent_key`: a key left empty (0 or "") that the trainer fills from
  the training data before the model is built (number of identities, cameras, views, the
  kind of object). The engine names no component's config group; components declare here.
* :func:`register_config_check`: a check of a component's keys that runs with the engine's
  validation of the whole config, before any data is read or model built.

Example (one file of a third-party loss)::

    from clipreid_plugin.config import CfgNode as CN, register_config_extension

    @register_config_extension
    def add_center_loss_config(cfg):
        cfg.CENTER_LOSS = CN()
        cfg.CENTER_LOSS.SCALE = 5e-4
"""

from typing import Any, Callable, Collection, Dict, NamedTuple, Optional, Tuple

from clipreid_plugin.utils.errors import PluginError
from clipreid_plugin.utils.plugins import load_entry_point_plugins, owner_of, plugin_display_name

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


def _is_active(fn: Callable, roots: Collection[str]) -> bool:
    """Whether ``fn`` belongs to the host or to one of the active plugins ``roots``."""
    owner = owner_of(getattr(fn, "__module__", ""))
    return owner is None or owner in roots


def registered_config_extensions(roots: Optional[Collection[str]] = None) -> Dict[str, Callable[[Any], None]]:
    """Returns: the registered extensions by name, in application order: all of them, or (given
    the active plugins' root modules) the host's and those plugins'."""
    return {k: fn for k, fn in _EXTENSIONS.items() if roots is None or _is_active(fn, roots)}


def apply_config_extensions(cfg, roots: Collection[str] = ()) -> None:
    """Apply to ``cfg`` (unfrozen, a root config) the host's extensions and those of the active
    plugins ``roots`` that it does not have yet.

    Args:
        cfg: the config, changed in place.
        roots: root module names of the plugins active in this config
            (:func:`clipreid_plugin.utils.plugins.active_roots`).

    Raises:
        PluginError: a plugin's extension added a key inside a group it does not own.
    """
    applied = cfg.__dict__.setdefault(_APPLIED_ATTR, set())
    for name, fn in registered_config_extensions(roots).items():
        if name in applied:
            continue
        owner = owner_of(getattr(fn, "__module__", ""))
        before = set(cfg.keys()), _leaf_keys(cfg)
        fn(cfg)
        applied.add(name)
        if owner is not None:
            _check_own_groups(cfg, before, owner, fn)


def plugin_providing_group(group: str) -> Optional[str]:
    """The plugin (as a user names it in ``PLUGINS``) whose config extension adds the top-level
    ``group``, among the registered ones and the installed ones (imported here to find out: an
    error path only); None when no plugin does."""
    from .config import CfgNode  # noqa: PLC0415 - config.py imports this module: a top import would be a cycle

    load_entry_point_plugins()
    for fn in _EXTENSIONS.values():
        owner = owner_of(getattr(fn, "__module__", ""))
        if owner is None:
            continue
        scratch = CfgNode()
        scratch.set_new_allowed(True)
        try:
            fn(scratch)
        except Exception:  # noqa: BLE001 - an extension that needs the host's keys: ignore for this probe
            continue
        if group in scratch:
            return plugin_display_name(owner)
    return None


def _leaf_keys(node, prefix: str = "") -> set:
    keys = set()
    for k, v in node.items():
        keys.update(_leaf_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"})
    return keys


def _check_own_groups(cfg, before, owner: str, fn: Callable) -> None:
    """A plugin's extension may add top-level groups, never keys inside groups that existed."""
    top_before, leaves_before = before
    intruding = sorted(k for k in _leaf_keys(cfg) - leaves_before if k.split(".")[0] in top_before
                       and k.split(".")[0] not in cfg.__dict__.get("__plugin_groups__", {}).get(owner, ()))
    cfg.__dict__.setdefault("__plugin_groups__", {}).setdefault(owner, set()).update(set(cfg.keys()) - top_before)
    if intruding:
        raise PluginError(f"The plugin {plugin_display_name(owner)!r} ({fn.__module__}.{fn.__qualname__}) adds "
                          f"{', '.join(intruding[:4])} inside a group it does not own: a plugin's keys live in "
                          f"top-level groups of its own (e.g. cfg.MY_PLUGIN = CN()).")


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


def registered_config_checks(roots: Optional[Collection[str]] = None) -> Dict[str, Callable[[Any, bool], None]]:
    """Returns: the registered config checks by name: all of them, or (given the active plugins'
    root modules) the host's and those plugins'."""
    return {k: fn for k, fn in _CHECKS.items() if roots is None or _is_active(fn, roots)}


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
        key: full dotted key, e.g. ``"CLIPREID.BACKBONE.NUM_CAMERAS"``.
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
