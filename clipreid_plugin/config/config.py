"""Config node with readable errors, ``_BASE_`` inheritance and plugin loading.

Built on fvcore's :class:`~fvcore.common.config.CfgNode`. What this module adds:

* unknown keys fail with the full key name and the closest valid keys;
* wrong types fail naming the key, the expected type and the key's default;
* ``merge_from_list`` accepts the same values a YAML file would (``5e-6`` as a float), and a
  bare word for a list of names (``DATASETS.NAMES VeRi``);
* the top-level ``PLUGINS`` list of a file (and of every file of its ``_BASE_`` chain) is
  imported before the file is merged, so a plugin's config keys and components exist when
  its values are read (see :mod:`clipreid_plugin.utils.plugins`);
* :func:`get_cfg` returns the defaults plus the keys of every loaded plugin, and
  :func:`load_cfg` is the one function every tool builds its config with.
"""

import ast
import difflib
import logging
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

from clipreid_plugin.utils.checkpoint import read_checkpoint_metadata
from clipreid_plugin.utils.errors import ConfigError, PluginError
from clipreid_plugin.utils.file_io import atomic_write_text
from clipreid_plugin.utils.plugins import active_roots, import_plugins, is_path_spec, plugin_root, resolve_plugin_spec

from .extensions import apply_config_extensions, lookup_key, plugin_providing_group
from .upgrade import upgrade_stored_config

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_cfg", "flatten_keys", "read_config_chain",
           "config_text_of_checkpoint", "as_name_list"]

BASE_KEY = "_BASE_"
PLUGINS_KEY = "PLUGINS"


def flatten_keys(node: Dict[str, Any], prefix: str = "") -> List[str]:
    """Returns: every leaf key of ``node`` as dotted full names (``MODEL.BACKBONE.NAME``)."""
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        if isinstance(v, dict):
            keys.extend(flatten_keys(v, full + "."))
        else:
            keys.append(full)
    return keys


def _closest(key: str, candidates: Iterable[str]) -> List[str]:
    candidates = list(dict.fromkeys(candidates))  # unique, in order
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    if not close:  # fall back to matching the last component only (a typo in the leaf)
        leaf = key.rsplit(".", 1)[-1]
        by_leaf: Dict[str, List[str]] = {}
        for c in candidates:
            by_leaf.setdefault(c.rsplit(".", 1)[-1], []).append(c)
        matches = difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.6)
        close = list(dict.fromkeys(c for m in matches for c in by_leaf[m]))[:3]
    return close


def _coerce_literal(value: Any) -> Any:
    """Parse a string as yacs does (Python literal), keeping plain strings as they are.

    A bracketed list of bare words (``[VeRi, Market1501]``, as YAML would read it) is a list too.
    """
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass
    if value.strip().startswith("[") and value.strip().endswith("]"):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(parsed, list):
            return parsed
    return value


def _default_of(full_key: str) -> Any:
    """The default value of ``full_key`` in a fresh :func:`get_cfg` (for messages)."""
    node, leaf = lookup_key(get_cfg(), full_key)
    return None if node is None else node[leaf]


def as_name_list(value: Any) -> List[str]:
    """Returns: a config value that names one thing or several as a list (``"VeRi"`` ->
    ``["VeRi"]``; a list or tuple as a list; None -> [])."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _is_list_of_names(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _type_name(value: Any) -> str:
    return "list" if isinstance(value, (list, tuple)) else type(value).__name__


class CfgNode(_FvCfgNode):
    """fvcore CfgNode that explains what is wrong with a config instead of asserting."""

    def _check_mergeable(self, other: Dict[str, Any], prefix: str = "") -> None:
        """Raise ConfigError for keys of ``other`` that do not exist here, or of wrong type.

        A bare string given for a list of names (``DATASETS.NAMES VeRi``) is turned into a
        one-element list in ``other``.
        """
        for k, v in list(other.items()):
            full = f"{prefix}{k}"
            if k not in self:
                if self.is_new_allowed():
                    continue
                plugin = plugin_providing_group(k) if not prefix else None
                if plugin:
                    raise ConfigError(f"Config key {full!r} belongs to the plugin {plugin!r}, which this config does "
                                      f"not activate: add it to PLUGINS (`PLUGINS: [{plugin}]`).")
                valid = flatten_keys(self, prefix) + [prefix + x for x in self.keys()]
                close = _closest(full, valid)
                hint = f" Closest valid keys: {', '.join(close)}." if close else ""
                raise ConfigError(f"Unknown config key {full!r}.{hint}")
            mine = self[k]
            if isinstance(mine, CfgNode):
                if not isinstance(v, dict):
                    raise ConfigError(
                        f"Config key {full!r} is a group of keys ({', '.join(list(mine)[:6])}...), "
                        f"but got a {type(v).__name__} value {v!r}. In YAML, a header with all its "
                        f"children commented out reads as null: delete the header or fill it in."
                    )
                mine._check_mergeable(v, full + ".")
            else:
                other[k] = self._check_type(full, mine, v)

    @staticmethod
    def _check_type(full: str, mine: Any, value: Any) -> Any:
        """Returns: ``value`` (a bare name wrapped into a list where a list of names is expected).

        Raises:
            ConfigError: naming the key, the expected type, the given value and the default.
        """
        parsed = _coerce_literal(value)
        if mine is None or parsed is None:
            return value
        if isinstance(mine, (list, tuple)) and isinstance(parsed, str) and (not mine or _is_list_of_names(mine)):
            return (parsed,)  # DATASETS.NAMES VeRi means ["VeRi"]
        ok = {bool: (bool,), int: (int,), float: (float, int), str: (str,), tuple: (tuple, list),
              list: (list, tuple)}
        allowed = ok.get(type(mine))
        if allowed is None:
            return value
        if isinstance(parsed, allowed) and not (type(parsed) is bool and type(mine) is not bool):
            return value
        default = _default_of(full)
        hint = ""
        if isinstance(mine, (list, tuple)):
            hint = (f" Give a list: in YAML `{full.rsplit('.', 1)[-1]}: [a, b]`, on the command line "
                    f"`{full} \"[a, b]\"`.")
        raise ConfigError(
            f"Config key {full!r} expects a {_type_name(mine)} (default {default!r}), got "
            f"{type(parsed).__name__} {parsed!r}.{hint}"
        )

    def merge_from_other_cfg(self, cfg_other: "CfgNode"):
        """Merge another CfgNode in, after checking every key and type.

        Args:
            cfg_other: the config to merge from.
        """
        if BASE_KEY in cfg_other:
            raise ConfigError(f"The key {BASE_KEY!r} can only be used in YAML files.")
        self._check_mergeable(cfg_other)
        return super().merge_from_other_cfg(cfg_other)

    def _load_plugins(self, specs: Sequence[str], base_dir: Optional[str], source: str) -> None:
        """Import plugins and activate them in this config: add the keys they registered."""
        import_plugins(specs, base_dir, source)
        was_frozen = self.is_frozen()
        self.defrost()
        apply_config_extensions(self, active_roots(list(self.get(PLUGINS_KEY, ())) + list(specs)))
        if was_frozen:
            self.freeze()

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML file (with its ``_BASE_`` chain) into this config.

        The ``PLUGINS`` of every file of the chain are imported first (paths relative to the
        file that lists them), and the merged config records all of them.

        Args:
            cfg_filename: path of the YAML file; ``_BASE_`` paths are relative to it.
            allow_unsafe: allow ``yaml.unsafe_load`` tags.
        """
        loaded, plugins = read_config_chain(cfg_filename, allow_unsafe)
        self._load_plugins(plugins, None, cfg_filename)
        if not loaded:
            return
        if plugins:
            loaded[PLUGINS_KEY] = list(dict.fromkeys(list(self.get(PLUGINS_KEY, ())) + plugins))
        try:
            self.merge_from_other_cfg(type(self)(loaded))
        except ConfigError as e:
            raise ConfigError(f"{e} (in {cfg_filename} or one of its _BASE_ files)") from None

    def merge_from_list(self, cfg_list: List[str]):
        """Merge ``KEY VALUE`` pairs (command-line overrides) into this config.

        Args:
            cfg_list: flat list ``[KEY1, VALUE1, KEY2, VALUE2, ...]``; values are parsed as
                Python literals when possible (``5e-6``, ``"[12, 12]"``, ``True``). A
                ``PLUGINS`` pair is imported before the other pairs are merged.
        """
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Overrides must come in KEY VALUE pairs; got an odd number of items: {cfg_list}"
            )
        nested: Dict[str, Any] = {}
        for full, value in zip(cfg_list[0::2], cfg_list[1::2]):
            if full == BASE_KEY:
                raise ConfigError(f"The key {BASE_KEY!r} can only be used in YAML files.")
            if full.startswith("-"):
                raise ConfigError(f"{full!r} is not a config key; command-line flags go before or after the "
                                  f"KEY VALUE overrides, not between a key and its value.")
            if full == PLUGINS_KEY:
                specs = _coerce_literal(value)
                specs = as_name_list(specs)
                specs = [resolve_plugin_spec(s, os.getcwd()) for s in specs]
                self._load_plugins(specs, None, "the PLUGINS override")
                value = list(dict.fromkeys(list(self.get(PLUGINS_KEY, ())) + specs))
            d = nested
            parts = full.split(".")
            for p in parts[:-1]:
                d = d.setdefault(p, {})
                if not isinstance(d, dict):
                    raise ConfigError(f"Override {full!r} conflicts with another override.")
            d[parts[-1]] = _coerce_literal(value)
        self.merge_from_other_cfg(type(self)(nested))

    def dump_to(self, path: str) -> None:
        """Write this config as YAML to ``path`` (atomically)."""
        atomic_write_text(path, self.dump())


def _merge_into(a: Dict[str, Any], b: Dict[str, Any]) -> None:
    """Merge dict ``a`` into ``b`` (values of ``a`` win), as fvcore merges a file over its bases."""
    for k, v in a.items():
        if isinstance(v, dict) and isinstance(b.get(k), dict):
            _merge_into(v, b[k])
        else:
            b[k] = v


def _read_yaml(path: str, referrer: Optional[str], allow_unsafe: bool) -> Dict[str, Any]:
    if not os.path.isfile(path):
        where = f" (the {BASE_KEY} of {referrer})" if referrer else ""
        raise ConfigError(f"Config file not found: {path}{where}.")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ConfigError(f"Config file {path} is not UTF-8 text ({e}).") from None
    try:
        data = yaml.unsafe_load(text) if allow_unsafe else yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of keys, not a {type(data).__name__}.")
    return data


def read_config_chain(path: str, allow_unsafe: bool = False, referrer: Optional[str] = None,
                      _chain: Tuple[str, ...] = ()) -> Tuple[Dict[str, Any], List[str]]:
    """Read a YAML config with its ``_BASE_`` files merged (bases first, the file wins).

    Args:
        path: the file; relative ``_BASE_`` paths start at its folder (``~`` is expanded).
        allow_unsafe: allow ``yaml.unsafe_load`` tags.
        referrer: the file whose ``_BASE_`` names ``path`` (for messages).

    Returns:
        (merged mapping without ``_BASE_`` and ``PLUGINS``, the union of the chain's
        ``PLUGINS`` in order, bases first, paths made absolute).

    Raises:
        ConfigError: a missing file (naming the file that refers to it), invalid YAML, not a
            mapping, a ``_BASE_`` loop, or a ``PLUGINS`` value that is not a list of names.
    """
    path = os.path.expanduser(path)
    if os.path.abspath(path) in _chain:  # without this check a loop ends in a RecursionError
        raise ConfigError(f"_BASE_ loop: {' -> '.join(_chain + (os.path.abspath(path),))}.")
    data = _read_yaml(path, referrer, allow_unsafe)
    here = os.path.dirname(os.path.abspath(path))
    merged: Dict[str, Any] = {}
    plugins: List[str] = []
    bases = data.pop(BASE_KEY, None)
    for base in as_name_list(bases):
        base = os.path.expanduser(str(base))
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        base_data, base_plugins = read_config_chain(base_path, allow_unsafe, referrer=path,
                                                    _chain=_chain + (os.path.abspath(path),))
        _merge_into(base_data, merged)
        plugins += base_plugins
    own = data.pop(PLUGINS_KEY, None) or []
    if isinstance(own, str):
        own = [own]
    if not isinstance(own, (list, tuple)) or not all(isinstance(p, str) for p in own):
        raise ConfigError(f"{PLUGINS_KEY} in {path} must be a list of module names or .py paths, got {own!r}.")
    plugins += [resolve_plugin_spec(p, here) for p in own]
    _merge_into(data, merged)
    return merged, list(dict.fromkeys(plugins))


def get_cfg(plugins: Sequence[str] = ()) -> CfgNode:
    """A fresh copy of the host's default config, with the keys of the plugins named here.

    No plugin is active unless named (here, or by a file's or an override's ``PLUGINS``), so the
    result never depends on which plugins the process imported before.

    Args:
        plugins: ``PLUGINS`` entries to activate (``["clipreid"]``, a module name, a path).

    Returns:
        The (unfrozen) config.
    """
    from .defaults import _C  # noqa: PLC0415 - defaults.py builds its CfgNode with this module

    cfg = _C.clone()
    apply_config_extensions(cfg)
    if plugins:
        specs = [resolve_plugin_spec(s, os.getcwd()) for s in as_name_list(plugins)]
        cfg._load_plugins(specs, None, "get_cfg(plugins=...)")
        cfg.PLUGINS = tuple(dict.fromkeys(specs))
    return cfg


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pkl")


def config_text_of_checkpoint(path: str) -> str:
    """The resolved config a checkpoint of this toolkit stores (its run's ``config.yaml``).

    Args:
        path: a ``model_*.pth`` file.

    Returns:
        The YAML text.

    Raises:
        ConfigError: the file holds no config (a reference checkpoint, a plain state dict).
    """
    text = read_checkpoint_metadata(path).get("config")
    if not text:
        raise ConfigError(f"{path} holds no config (it is not a checkpoint written by this toolkit's trainer): give "
                          f"the config it was trained with (--config-file, e.g. the run's config.yaml).")
    return text


def _plugins_override(opts: Sequence[str]) -> Optional[List[str]]:
    """The ``PLUGINS`` override among ``KEY VALUE`` pairs, resolved (None when there is none)."""
    pairs = dict(zip(list(opts)[0::2], list(opts)[1::2]))
    if PLUGINS_KEY not in pairs:
        return None
    return [resolve_plugin_spec(s, os.getcwd()) for s in as_name_list(_coerce_literal(pairs[PLUGINS_KEY]))]


def _merge_checkpoint_config(cfg: CfgNode, path: str, opts: Sequence[str]) -> None:
    """Merge the config a checkpoint stores, activating the plugins it was trained with first.

    A ``PLUGINS`` override replaces a stored plugin of the same name (a plugin file that moved:
    ``PLUGINS "['new/place/my_plugin.py']"``); a stored plugin file that no longer exists and is
    not replaced is a one-line error saying so.
    """
    data = yaml.safe_load(config_text_of_checkpoint(path)) or {}
    notes = upgrade_stored_config(data)
    if notes:
        logging.getLogger(__name__).info(f"{path} was written by an earlier version; its config is read with today's "
                                         f"keys: {'; '.join(notes)}.")
    stored = as_name_list(data.pop(PLUGINS_KEY, None))
    override = _plugins_override(opts) or []
    replaced = {plugin_root(s) for s in override}
    kept = [s for s in stored if plugin_root(s) not in replaced]
    gone = [s for s in kept if is_path_spec(s) and not os.path.exists(s)]
    if gone:
        raise PluginError(f"{path} was trained with the plugin file {gone[0]}, which no longer exists: restore it, "
                          f"or give its new place with the override PLUGINS \"['new/place/{os.path.basename(gone[0])}']\".")
    specs = list(dict.fromkeys(kept + override))
    cfg._load_plugins(specs, None, f"the checkpoint {path}")
    cfg.PLUGINS = tuple(specs)
    # Earlier versions stored the keys of every installed plugin, active or not: a group of a
    # plugin this run did not use holds only defaults and is left out.
    for group in [g for g in data if g not in cfg and plugin_providing_group(g)]:
        data.pop(group)
    try:
        cfg.merge_from_other_cfg(type(cfg)(data))
    except ConfigError as e:
        raise ConfigError(f"{e} (in the config stored in {path})") from None


def load_cfg(config_file: str = "", opts: Optional[Sequence[str]] = None, freeze: bool = True) -> CfgNode:
    """The config of a run: defaults and plugin keys, the file (``_BASE_`` chain, ``PLUGINS``),
    then ``KEY VALUE`` overrides. Every tool and test builds its config through this function.

    Args:
        config_file: YAML file, or a checkpoint of this toolkit (``model_final.pth``: the
            resolved config stored in it); "" = defaults only.
        opts: flat ``[KEY1, VALUE1, ...]`` overrides.
        freeze: freeze the result.

    Returns:
        The config.
    """
    cfg = get_cfg()
    if config_file and config_file.endswith(CHECKPOINT_SUFFIXES):
        _merge_checkpoint_config(cfg, config_file, opts or [])
    elif config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts or []))
    if freeze:
        cfg.freeze()
    return cfg
