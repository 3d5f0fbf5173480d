"""A registry that names the registered components when a lookup fails.

fvcore's :class:`~fvcore.common.registry.Registry` only says "No object named X"; users
need to know what *is* available, and the nearest spelling of what they typed.
"""

import difflib
from typing import Any

from fvcore.common.registry import Registry as _FvcoreRegistry

__all__ = ["Registry"]


class Registry(_FvcoreRegistry):
    """fvcore Registry whose ``get`` error lists the registered names and close matches."""

    def get(self, name: str) -> Any:
        """Return the object registered as ``name``.

        Args:
            name: registered name (usually the class or function name).

        Returns:
            The registered object.

        Raises:
            KeyError: the name is unknown; the message lists every registered name.
        """
        obj = self._obj_map.get(name)
        if obj is None:
            names = sorted(self._obj_map)
            close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise KeyError(
                f"No object named {name!r} in the {self._name} registry.{hint} "
                f"Registered names: {', '.join(names) or '(none)'}."
            )
        return obj

    def names(self):
        """Returns: the sorted list of registered names."""
        return sorted(self._obj_map)
