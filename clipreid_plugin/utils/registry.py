"""A registry that names the registered components when a lookup fails.

fvcore's :class:`~fvcore.common.registry.Registry` only says "No object named X"; users
need to know what *is* available, and the nearest spelling of what they typed. A lookup that
misses first imports the installed plugins (entry-point group ``clipreid_plugin.plugins``), so
a component of an installed plugin is found without importing it by hand.
"""

import difflib
from typing import Any

from fvcore.common.registry import Registry as _FvcoreRegistry

from .errors import ConfigError, UnknownComponentError

__all__ = ["Registry"]


def _qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class Registry(_FvcoreRegistry):
    """fvcore Registry whose ``get`` error lists the registered names and close matches."""

    def _do_register(self, name: str, obj: Any) -> None:
        old = self._obj_map.get(name)
        if old is not None and old is not obj:
            if _qualified_name(old) != _qualified_name(obj):
                raise ValueError(f"Two components named {name!r} in the {self._name} registry: "
                                 f"{_qualified_name(old)} and {_qualified_name(obj)}. Rename one of them.")
            # the same definition imported again (a plugin file loaded twice): the newest wins
        self._obj_map[name] = obj

    def get(self, name: str) -> Any:
        """Return the object registered as ``name``.

        Args:
            name: registered name (usually the class or function name).

        Returns:
            The registered object.

        Raises:
            UnknownComponentError: (a KeyError) the name is unknown; the message lists every
                registered name.
        """
        obj = self._obj_map.get(name)
        if obj is None:
            from .plugins import load_entry_point_plugins

            if load_entry_point_plugins():
                obj = self._obj_map.get(name)
        if obj is None:
            names = sorted(self._obj_map)
            close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownComponentError(
                f"No object named {name!r} in the {self._name} registry.{hint} "
                f"Registered names: {', '.join(names) or '(none)'}. A component of a plugin is "
                f"found once the plugin is imported (PLUGINS in the config)."
            )
        return obj

    def get_for_key(self, name: str, key: str) -> Any:
        """:meth:`get` for a name a config key gives: the error names the key too.

        Args:
            name: registered name.
            key: the config key that names it (e.g. ``"SOLVER.SCHED.NAME"``).

        Returns:
            The registered object.

        Raises:
            ConfigError: ``"<key>: <the get error>"``.
        """
        try:
            return self.get(name)
        except UnknownComponentError as e:
            raise ConfigError(f"{key}: {e}") from None

    def build(self, name: str, cfg, *, key: str = "", **context) -> Any:
        """Build the component registered as ``name``: the one way every builder constructs one.

        Every kind follows :func:`~clipreid_plugin.config.configurable`: the registered class
        (or function) is called as ``obj(cfg, **context)``, ``context`` being what the kind's
        builder knows besides the config (listed in each registry's docstring).

        Args:
            name: registered name.
            cfg: the config.
            key: the config key that named it, for the unknown-name message ("" = none).
            **context: keyword arguments of the kind (``in_dim`` of a head, ...).

        Returns:
            The built component.
        """
        obj = self.get_for_key(name, key) if key else self.get(name)
        return obj(cfg, **context)

    def names(self):
        """Returns: the sorted list of registered names."""
        return sorted(self._obj_map)
