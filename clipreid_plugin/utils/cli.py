"""What every command-line tool in ``tools/`` shares: logging setup and one-line error messages."""

import logging
import os
import sys
from typing import Callable

from .errors import ToolkitError
from .logger import FILE_ONLY, setup_logger

__all__ = ["run_tool", "one_line"]


def run_tool(main: Callable[[], object]) -> int:
    """Run a tool's ``main`` and turn the toolkit's own errors into one-line messages.

    Only :class:`~clipreid_plugin.utils.errors.ToolkitError` (a bad config, a missing dataset
    folder, an unreadable checkpoint, a missing optional package, ...) becomes a message: any
    other exception is a bug and keeps its traceback.

    Args:
        main: the tool body (parses its own arguments); it may return an exit code (an int).

    Returns:
        The process exit code: main's when it returns an int (anything else counts as 0), or 2
        after a user error.
        ``CLIPREID_DEBUG=1`` re-raises.
    """
    setup_logger()
    try:
        code = main()
    except ToolkitError as e:
        if os.environ.get("CLIPREID_DEBUG"):
            raise
        # the run's log file (when the tool opened one) says why it stopped; the console gets the line once
        logging.getLogger("clipreid_plugin").error(f"error: {one_line(e)}", extra=FILE_ONLY)
        print(f"error: {one_line(e)}\n(set CLIPREID_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def one_line(error: BaseException) -> str:
    """The message of ``error`` without the traceback text a DataLoader worker wraps it in.

    torch re-raises an error of a worker process in the main process as the same type, with
    "Caught X in DataLoader worker process N. Original Traceback ..." as its message; the
    original message is the last line, after "X: ".
    """
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last
