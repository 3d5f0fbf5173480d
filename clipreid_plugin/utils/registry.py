"""A registry that names the registered components when a lookup fails.

fvcore's :class:`~fvcore.common.registry.Registry` only says "No object named X"; users
need to know what *is* available, and the nearest spelling of what they typed. A component that
belongs to a plugin can be built only from a config that activates the plugin (``PLUGINS``); a
lookup that misses imports the installed plugins (entry-point group ``clipreid_plugin.plugins``)
only to say which one provides the name, never to use it silently.
"""

import difflib
from typing import Any

from fvcore.common.registry import Registry as _FvcoreRegistry

from .errors import ConfigError, UnknownComponentError
from .plugins import active_roots, load_entry_point_plugins, owner_of, plugin_display_name

__all__ = ["Registry", "all_registries"]

_ALL: "list" = []


def all_registries():
    """Returns: every :class:`Registry` created so far (the engine validates the config keys
    each one declares, see :meth:`Registry.name_config_key`)."""
    return list(_ALL)


def _qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class Registry(_FvcoreRegistry):
    """fvcore Registry whose ``get`` error lists the registered names and close matches.

    A registry also knows which config keys name its components (:meth:`name_config_key`), so
    the engine checks every such key of a config before a run, whoever declared it.
    """

    def __init__(self, name: str, config_keys=(), training_keys=()):
        """
        Args:
            name: the registry's name (in messages).
            config_keys: full config keys whose value names components of this registry (a name
                or a list of names), used by training and evaluation runs.
            training_keys: the same, used by training runs only.
        """
        super().__init__(name)
        self.config_keys = {}
        for key in config_keys:
            self.name_config_key(key)
        for key in training_keys:
            self.name_config_key(key, training_only=True)
        _ALL.append(self)

    def name_config_key(self, key: str, training_only: bool = False) -> None:
        """Declare that config key ``key`` names components of this registry.

        A plugin declares its own keys this way (``HEAD_REGISTRY.name_config_key(
        "CLIPREID.PROMPT.HEAD_NAME")``); a key absent from a config (its plugin not active) is
        skipped by the validation.

        Args:
            key: full dotted key.
            training_only: only a training run uses it.
        """
        self.config_keys[key] = training_only

    def _do_register(self, name: str, obj: Any) -> None:
        old = self._obj_map.get(name)
        if old is not None and old is not obj:
            if _qualified_name(old) != _qualified_name(obj):
                raise ValueError(f"Two components named {name!r} in the {self._name} registry: "
                                 f"{_qualified_name(old)} and {_qualified_name(obj)}. Rename one of them.")
            # the same definition imported again (a plugin file loaded twice): the newest wins
        self._obj_map[name] = obj

    def get(self, name: str, cfg=None) -> Any:
        """Return the object registered as ``name``.

        Args:
            name: registered name (usually the class or function name).
            cfg: the config the object is for; a plugin's object is returned only when the
                config's ``PLUGINS`` activates that plugin. None: no activation check (code that
                already holds the plugin, e.g. the plugin itself).

        Returns:
            The registered object.

        Raises:
            UnknownComponentError: (a KeyError) the name is unknown (the message lists every
                registered name), or it belongs to a plugin the config does not activate (the
                message names the plugin to add to PLUGINS).
        """
        obj = self._obj_map.get(name)
        if obj is None:
            # Installed plugins are imported only to name the provider: a component is used only
            # when its plugin is active in the config, so this import changes no run.
            load_entry_point_plugins()
            obj = self._obj_map.get(name)
            if obj is None:
                names = sorted(self._obj_map)
                close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise UnknownComponentError(
                    f"No object named {name!r} in the {self._name} registry.{hint} "
                    f"Registered names: {', '.join(names) or '(none)'}. A component of a plugin is "
                    f"found once the plugin is named in PLUGINS."
                )
            self._check_active(name, obj, None)
        elif cfg is not None:
            self._check_active(name, obj, cfg)
        return obj

    def _check_active(self, name: str, obj: Any, cfg) -> None:
        owner = owner_of(getattr(obj, "__module__", ""))
        if owner is None or (cfg is not None and owner in active_roots(cfg.get("PLUGINS", ()))):
            return
        plugin = plugin_display_name(owner)
        raise UnknownComponentError(f"{name!r} ({self._name} registry) is provided by the plugin {plugin!r}: add it "
                                    f"to PLUGINS (in the YAML `PLUGINS: [{plugin}]`, or the override "
                                    f"`PLUGINS \"['{plugin}']\"`).")

    def get_for_key(self, name: str, key: str, cfg=None) -> Any:
        """:meth:`get` for a name a config key gives: the error names the key too.

        Args:
            name: registered name.
            key: the config key that names it (e.g. ``"SOLVER.SCHED.NAME"``).
            cfg: the config (see :meth:`get`).

        Returns:
            The registered object.

        Raises:
            ConfigError: ``"<key>: <the get error>"``.
        """
        try:
            return self.get(name, cfg)
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
        obj = self.get_for_key(name, key, cfg) if key else self.get(name, cfg)
        return obj(cfg, **context)

    def names(self):
        """Returns: the sorted list of registered names."""
        return sorted(self._obj_map)
