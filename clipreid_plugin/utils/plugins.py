"""Plugin loading and activation: modules named in a config's ``PLUGINS``, installed entry points.

A plugin is an ordinary Python module that, when imported, registers components (backbones,
heads, losses, meta-architectures, datasets, samplers, evaluators, hooks, checkpoint
converters), config extensions and config checks through the public seams.

A plugin is *available* once installed and *active* only in a run whose config chain names it in
``PLUGINS``: only an active plugin's config extensions add keys, only its checks run, and only its
components can be built from that config (see :meth:`clipreid_plugin.utils.registry.Registry.build`).
Activation is a property of the config, not of the process: a process that has imported a plugin
for one config builds every other config exactly as if it never had.

A ``PLUGINS`` entry is one of

* the name of an installed plugin: an entry point of the group ``clipreid_plugin.plugins``
  (``[project.entry-points."clipreid_plugin.plugins"]``); the built-in CLIP-ReID plugin is
  ``clipreid``;
* a dotted module name (``my_package.my_plugin``);
* a path to a ``.py`` file or a package folder, relative to the YAML file naming it.

Which plugin owns a registration is read from the registering object's module: the plugin's
module and its submodules belong to it (:func:`owner_of`). Installed plugins are never imported
to build a config; a registry lookup that misses imports them only to name the plugin that
provides the missing name (``CLIPREID_DISABLE_PLUGIN_AUTOLOAD=1`` skips even that).
"""

import importlib
import importlib.util
import logging
import os
import sys
from importlib import metadata
from types import ModuleType
from typing import Dict, Iterable, List, Optional, Sequence, Set

from .errors import PluginError

__all__ = ["ENTRY_POINT_GROUP", "DISABLE_AUTOLOAD_ENV", "BUILTIN_PLUGIN_PACKAGE", "load_entry_point_plugins",
           "import_plugin", "import_plugins", "is_path_spec", "resolve_plugin_spec", "installed_plugins",
           "plugin_root", "owner_of", "active_roots", "plugin_display_name"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "clipreid_plugin.plugins"
DISABLE_AUTOLOAD_ENV = "CLIPREID_DISABLE_PLUGIN_AUTOLOAD"

BUILTIN_PLUGIN_PACKAGE = "clipreid_plugin.plugins"

_entry_points_loaded = False
# PLUGINS entry (as resolved) -> root module name of the plugin it imported
_ROOT_OF_SPEC: Dict[str, str] = {}
# root module names of every plugin imported so far (path plugins are named by their file)
_ROOTS: Set[str] = set()


def installed_plugins() -> Dict[str, str]:
    """Returns: ``{entry-point name: module}`` of the installed plugins (nothing is imported)."""
    if os.environ.get(DISABLE_AUTOLOAD_ENV):
        return {}
    return {ep.name: ep.value.split(":")[0] for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def plugin_root(spec: str) -> str:
    """The root module name a ``PLUGINS`` entry stands for, without importing it.

    Args:
        spec: an installed plugin's name, a dotted module name, or an absolute path.

    Returns:
        The module name its registrations carry (a path plugin: its file or folder name).
    """
    if spec in _ROOT_OF_SPEC:
        return _ROOT_OF_SPEC[spec]
    if is_path_spec(spec):
        return os.path.splitext(os.path.basename(os.path.normpath(spec)))[0]
    return installed_plugins().get(spec, spec)


def owner_of(module_name: str) -> Optional[str]:
    """The plugin a module belongs to: the root of the longest imported plugin it is (inside) of.

    Modules inside ``clipreid_plugin.plugins.<name>`` belong to that plugin even when a test
    imported them directly, so ownership never depends on how a module came in.

    Args:
        module_name: ``obj.__module__`` of a registered object.

    Returns:
        The plugin's root module name, or None for the host (and code that is no plugin).
    """
    if not module_name:
        return None
    prefix = BUILTIN_PLUGIN_PACKAGE + "."
    if module_name.startswith(prefix):
        return prefix + module_name[len(prefix):].split(".")[0]
    best = None
    for root in _ROOTS:
        if (module_name == root or module_name.startswith(root + ".")) and (best is None or len(root) > len(best)):
            best = root
    return best


def active_roots(specs: Iterable[str]) -> Set[str]:
    """Returns: the root module names of the plugins a config's ``PLUGINS`` names."""
    return {plugin_root(str(s)) for s in specs}


def plugin_display_name(root: str) -> str:
    """Returns: how a user names plugin ``root`` in ``PLUGINS`` (its entry-point name if installed)."""
    for name, module in installed_plugins().items():
        if module == root:
            return name
    return root


def load_entry_point_plugins() -> List[str]:
    """Import every plugin of the ``clipreid_plugin.plugins`` entry-point group (once per process).

    Importing makes them available, not active: the registry calls this only to name the plugin
    that provides a name a config asked for.

    Returns:
        The names of the entry points imported by this call ([] after the first call, or when
        ``CLIPREID_DISABLE_PLUGIN_AUTOLOAD`` is set).

    Raises:
        PluginError: an entry point cannot be imported (names it and its distribution).
    """
    global _entry_points_loaded
    if _entry_points_loaded or os.environ.get(DISABLE_AUTOLOAD_ENV):
        return []
    _entry_points_loaded = True  # set first: a plugin importing the toolkit must not recurse here
    loaded = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            module = ep.load()
        except Exception as e:  # noqa: BLE001 - any failure of a third-party import gets the same message
            dist = getattr(ep, "dist", None)
            owner = f" of the installed package {dist.name!r}" if dist is not None else ""
            raise PluginError(f"Cannot load the plugin entry point {ep.name!r} ({ep.value}){owner}: "
                              f"{_cause(e)}. Fix or uninstall it, or set "
                              f"{DISABLE_AUTOLOAD_ENV}=1 to skip installed plugins.") from e
        root = getattr(module, "__name__", ep.value.split(":")[0])
        _ROOTS.add(root)
        _ROOT_OF_SPEC[ep.name] = root
        loaded.append(ep.name)
    return loaded


def is_path_spec(spec: str) -> bool:
    """Returns: whether a ``PLUGINS`` entry is a file or folder path rather than a module name."""
    return spec.endswith(".py") or "/" in spec or os.sep in spec or spec.startswith(".")


def resolve_plugin_spec(spec: str, base_dir: Optional[str] = None) -> str:
    """A ``PLUGINS`` entry made independent of the file naming it.

    Args:
        spec: a dotted module name, or a path to a ``.py`` file or a package folder.
        base_dir: folder of the YAML file that names it (relative paths start there).

    Returns:
        The module name unchanged, or the absolute path.
    """
    spec = str(spec).strip()
    if not is_path_spec(spec):
        return spec
    path = os.path.expanduser(spec)
    if not os.path.isabs(path) and base_dir:
        path = os.path.join(base_dir, path)
    return os.path.abspath(path)


def _import_path(path: str) -> ModuleType:
    if os.path.isdir(path):
        init = os.path.join(path, "__init__.py")
        if not os.path.isfile(init):
            raise PluginError(f"Plugin folder {path} has no __init__.py: give a package folder or a .py file.")
        name, location, search = os.path.basename(os.path.normpath(path)), init, [path]
    elif os.path.isfile(path):
        name, location, search = os.path.splitext(os.path.basename(path))[0], path, None
    else:
        raise PluginError(f"Plugin file {path} does not exist (PLUGINS paths are relative to the YAML file "
                          f"that lists them).")
    existing = sys.modules.get(name)
    if existing is not None and os.path.abspath(getattr(existing, "__file__", "") or "") == os.path.abspath(location):
        return existing  # already imported from this very file
    module_spec = importlib.util.spec_from_file_location(name, location, submodule_search_locations=search)
    module = importlib.util.module_from_spec(module_spec)
    # Registered before executing, as a normal import does: pickling (DDP spawn, DataLoader
    # workers) and imports of the plugin's own submodules find it by name.
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def import_plugin(spec: str, base_dir: Optional[str] = None, source: str = "PLUGINS") -> ModuleType:
    """Import one plugin (its registrations happen on import) and remember its root module.

    Args:
        spec: an installed plugin's name (``clipreid``), a dotted module name, or a path to a
            ``.py`` file or package folder.
        base_dir: folder relative paths start from.
        source: where the entry came from, for messages (e.g. the YAML file).

    Returns:
        The module.

    Raises:
        PluginError: the module cannot be found or fails while importing.
    """
    target = resolve_plugin_spec(spec, base_dir)
    try:
        if is_path_spec(target):
            module = _import_path(target)
        else:
            module = importlib.import_module(installed_plugins().get(target, target))
        _ROOTS.add(module.__name__)
        _ROOT_OF_SPEC[target] = module.__name__
        return module
    except PluginError:
        raise
    except ModuleNotFoundError as e:
        if e.name and target.startswith(e.name):
            raise PluginError(f"Plugin module {target!r} (listed in {source}) is not importable: install it, "
                              f"put its folder on PYTHONPATH, or give a path to its .py file.") from e
        raise PluginError(f"Plugin {target!r} (listed in {source}) failed to import: {str(e).rstrip('.')}.") from e
    except Exception as e:  # noqa: BLE001 - the plugin's own error, reported with its origin
        # the tools add "(set CLIPREID_DEBUG=1 for the full traceback)" to every one-line error
        raise PluginError(f"Plugin {target!r} (listed in {source}) failed to import: {_cause(e)}.") from e


def _cause(error: BaseException) -> str:
    """``Type: message`` of a plugin's own error, without a final period (the caller ends the sentence)."""
    return f"{type(error).__name__}: {str(error).rstrip('.')}"


def import_plugins(specs: Sequence[str], base_dir: Optional[str] = None, source: str = "PLUGINS") -> List[ModuleType]:
    """Import several plugins in order (see :func:`import_plugin`).

    Returns:
        The modules.
    """
    return [import_plugin(s, base_dir, source) for s in specs]
