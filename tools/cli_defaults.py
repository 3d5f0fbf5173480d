"""Process defaults that every command line in ``tools/`` and ``benchmarks/`` sets before torch loads.

One line per default; each is a default only: a value already in the user's environment wins.

* ``OMP_WAIT_POLICY=PASSIVE``: torch's CPU kernels run on OpenMP threads, and by default an idle
  OpenMP thread spins for a while before it sleeps. When other processes want the same cores
  (a shared machine, DataLoader workers, a second run), the spinning threads take CPU time from
  the threads doing the work: on a shared 2-core machine a training step was 3-4x slower
  (``benchmarks/omp_wait_policy.py`` measures both policies; docs/PERFORMANCE.md). OpenMP reads
  the variable once, when torch loads it, so :func:`set_cli_defaults` must run before the first
  ``import torch`` (of the tool or of anything it imports); child processes inherit it.

Usage, at the top of a tool (``tools/`` is on ``sys.path`` when a tool runs, and in the tests)::

    from cli_defaults import set_cli_defaults

    set_cli_defaults()  # before torch loads

    import torch

This module imports nothing but the standard library, so that importing it cannot load torch.
"""

import os
from typing import Dict, MutableMapping, Optional

__all__ = ["CLI_DEFAULTS", "set_cli_defaults"]

# variable -> default value (why: the module docstring)
CLI_DEFAULTS: Dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}


def set_cli_defaults(environ: Optional[MutableMapping[str, str]] = None) -> None:
    """Set each of :data:`CLI_DEFAULTS` in ``environ`` unless it is already set there.

    Args:
        environ: the environment to update (default ``os.environ``, which child processes inherit).
    """
    environ = os.environ if environ is None else environ
    for name, value in CLI_DEFAULTS.items():
        environ.setdefault(name, value)
