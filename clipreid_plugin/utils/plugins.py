"""Plugin loading: modules named in a config's ``PLUGINS`` and installed entry points.

A plugin is an ordinary Python module that, when imported, registers components (backbones,
heads, losses, meta-architectures, datasets, samplers, evaluators, hooks, checkpoint
converters) and config extensions through the public seams. Two ways bring one in:

* ``PLUGINS: [my_package.my_plugin, ../plugins/center_loss.py]`` at the top level of a YAML
  file (any file of its ``_BASE_`` chain, or a ``PLUGINS`` override): imported before the
  rest of the file is merged, as OpenMMLab's ``custom_imports``. An entry is a dotted module
  name, or a path to a ``.py`` file or a package folder, relative to the YAML file naming it;
* an installed distribution that declares an entry point in the group
  ``clipreid_plugin.plugins`` (``[project.entry-points."clipreid_plugin.plugins"]``): imported
  the first time a config is built or a registry lookup misses. Set
  ``CLIPREID_DISABLE_PLUGIN_AUTOLOAD=1`` to skip them. The built-in CLIP-ReID plugin
  registers itself this way.
"""

import importlib
import importlib.util
import logging
import os
import sys
from importlib import metadata
from types import ModuleType
from typing import List, Optional, Sequence

from .errors import PluginError

__all__ = ["ENTRY_POINT_GROUP", "DISABLE_AUTOLOAD_ENV", "load_entry_point_plugins", "import_plugin",
           "import_plugins", "is_path_spec", "resolve_plugin_spec"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "clipreid_plugin.plugins"
DISABLE_AUTOLOAD_ENV = "CLIPREID_DISABLE_PLUGIN_AUTOLOAD"

_entry_points_loaded = False


def load_entry_point_plugins() -> List[str]:
    """Import every plugin of the ``clipreid_plugin.plugins`` entry-point group (once per process).

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
            ep.load()
        except Exception as e:  # noqa: BLE001 - any failure of a third-party import gets the same message
            dist = getattr(ep, "dist", None)
            owner = f" of the installed package {dist.name!r}" if dist is not None else ""
            raise PluginError(f"Cannot load the plugin entry point {ep.name!r} ({ep.value}){owner}: "
                              f"{_cause(e)}. Fix or uninstall it, or set "
                              f"{DISABLE_AUTOLOAD_ENV}=1 to skip installed plugins.") from e
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
    """Import one plugin (its registrations happen on import).

    Args:
        spec: dotted module name, or path to a ``.py`` file or package folder.
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
            return _import_path(target)
        return importlib.import_module(target)
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
