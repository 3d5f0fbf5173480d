"""Run a tool of tools/ in-process, as its command line does (the same main, under run_tool)."""

import importlib.util
import logging
import os

from clipreid_plugin.utils.cli import run_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name):
    """Import tools/<name>.py as a module (its main(argv) runs in-process, which is fast)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_cli(name, argv):
    """tools/<name>.py as a user runs it (main under run_tool); returns the exit code.

    run_tool points the package logger's console handler at the current ``sys.stdout`` (this
    test's capture); the handlers are put back afterwards so a later test never logs to a
    capture that is closed."""
    mod = load_tool(name)
    logger = logging.getLogger("clipreid_plugin")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    try:
        return run_tool(lambda: mod.main([str(a) for a in argv]))
    finally:
        for h in logger.handlers:
            if h not in saved[0]:
                h.close()
        logger.handlers[:] = saved[0]
        logger.propagate, logger.level = saved[1], saved[2]
