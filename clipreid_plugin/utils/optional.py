"""One way to import an optional dependency (an extra of ``setup.py``).

A user who calls a feature whose package is not installed gets one line naming the feature, the
extra that installs the package, and the plain ``pip`` equivalent, instead of an
``ImportError`` traceback from deep inside the toolkit.
"""

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["import_optional", "extra_hint"]


def extra_hint(extra: str, packages: str) -> str:
    """Returns: the install command for an extra, e.g. ``pip install 'clipreid_plugin[plots]'
    (or: pip install matplotlib)``.

    Args:
        extra: the extra's name in ``setup.py``.
        packages: what plain ``pip install`` would need instead.
    """
    return f"pip install 'clipreid_plugin[{extra}]' (or: pip install {packages})"


def import_optional(module: str, feature: str, extra: str, packages: str, note: str = "") -> ModuleType:
    """Import ``module``, or fail naming the feature that needs it and how to install it.

    Args:
        module: the module to import (``"faiss"``, ``"matplotlib"``).
        feature: what needs it, the subject of the message ("An indexed gallery search").
        extra: the ``setup.py`` extra that installs it.
        packages: the plain ``pip install`` equivalent.
        note: an optional sentence appended to the message (what works without it).

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        message = f"{feature} needs {module}, which is not installed: {extra_hint(extra, packages)}."
        raise MissingDependencyError(f"{message} {note}".rstrip()) from None
