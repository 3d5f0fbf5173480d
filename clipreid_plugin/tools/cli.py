"""What every command-line tool in ``tools/`` shares: logging setup and one-line error messages."""

import os
import sys
from typing import Callable

__all__ = ["run_tool"]


def run_tool(main: Callable[[], None]) -> int:
    """Run a tool's ``main`` and turn the user errors it raises into one-line messages.

    Args:
        main: the tool body (parses its own arguments).

    Returns:
        The process exit code: 0, or 2 after a user error (missing file, bad config,
        unreadable checkpoint, missing optional package). ``CLIPREID_DEBUG=1`` re-raises.
    """
    from clipreid_plugin.data import DatasetError
    from clipreid_plugin.utils.checkpoint import CheckpointError
    from clipreid_plugin.utils.logger import setup_logger

    setup_logger()
    try:
        main()
    except (CheckpointError, DatasetError, FileNotFoundError, ImportError, KeyError, ValueError) as e:
        if os.environ.get("CLIPREID_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}\n(set CLIPREID_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    return 0
