"""Config node with readable errors, ``_BASE_`` inheritance and plugin hooks.

Built on fvcore's :class:`~fvcore.common.config.CfgNode` (which already resolves ``_BASE_``
chains relative to each file). What this module adds:

* unknown keys fail with the full key name and the closest valid keys;
* wrong types fail naming the key, the expected and the given type;
* ``merge_from_list`` accepts the same values a YAML file would (``5e-6`` as a float);
* :func:`get_cfg` returns the defaults with every built-in plugin's keys added.
"""

import ast
import difflib
from typing import Any, Dict, Iterable, List

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

__all__ = ["CfgNode", "ConfigError", "get_cfg", "flatten_keys"]

BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


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
    candidates = list(candidates)
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    if not close:  # fall back to matching the last component only (a typo in the leaf)
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {c.rsplit(".", 1)[-1]: c for c in candidates}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.6)]
    return close


def _coerce_literal(value: Any) -> Any:
    """Parse a string as yacs does (Python literal), keeping plain strings as they are."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


class CfgNode(_FvCfgNode):
    """fvcore CfgNode that explains what is wrong with a config instead of asserting."""

    def _check_mergeable(self, other: Dict[str, Any], prefix: str = "") -> None:
        """Raise ConfigError for keys of ``other`` that do not exist here, or of wrong type."""
        for k, v in other.items():
            full = f"{prefix}{k}"
            if k not in self:
                if self.is_new_allowed():
                    continue
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
                self._check_type(full, mine, v)

    @staticmethod
    def _check_type(full: str, mine: Any, value: Any) -> None:
        value = _coerce_literal(value)
        if mine is None or value is None:
            return
        ok = {
            bool: (bool,),
            int: (int,),
            float: (float, int),
            str: (str,),
            tuple: (tuple, list),
            list: (list, tuple),
        }
        for t, allowed in ok.items():
            if type(mine) is t:
                if type(value) is bool and t is not bool:
                    break
                if isinstance(value, allowed):
                    return
                break
        else:
            return
        raise ConfigError(
            f"Config key {full!r} expects {type(mine).__name__} (default {mine!r}), "
            f"got {type(value).__name__} {value!r}."
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

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML file (with its ``_BASE_`` chain) into this config.

        Args:
            cfg_filename: path of the YAML file; ``_BASE_`` paths are relative to it.
            allow_unsafe: allow ``yaml.unsafe_load`` tags.
        """
        try:
            loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        except FileNotFoundError as e:
            raise ConfigError(f"Config file not found: {e.filename or cfg_filename}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file {cfg_filename} is not valid YAML: {e}") from None
        if loaded is None:
            return
        try:
            self.merge_from_other_cfg(type(self)(loaded))
        except ConfigError as e:
            raise ConfigError(f"{e} (in {cfg_filename} or one of its _BASE_ files)") from None

    def merge_from_list(self, cfg_list: List[str]):
        """Merge ``KEY VALUE`` pairs (command-line overrides) into this config.

        Args:
            cfg_list: flat list ``[KEY1, VALUE1, KEY2, VALUE2, ...]``; values are parsed as
                Python literals when possible (``5e-6``, ``"[12, 12]"``, ``True``).
        """
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Overrides must come in KEY VALUE pairs; got an odd number of items: {cfg_list}"
            )
        nested: Dict[str, Any] = {}
        for full, value in zip(cfg_list[0::2], cfg_list[1::2]):
            if full == BASE_KEY:
                raise ConfigError(f"The key {BASE_KEY!r} can only be used in YAML files.")
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
        from clipreid_plugin.utils.file_io import atomic_write_text

        atomic_write_text(path, self.dump())


def get_cfg() -> CfgNode:
    """Returns: a fresh copy of the default config with every built-in plugin's keys added."""
    from .defaults import _C
    from .clipreid_config import add_clipreid_config

    cfg = _C.clone()
    add_clipreid_config(cfg)
    return cfg
