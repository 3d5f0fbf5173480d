"""Run a tool of tools/ in-process, as its command line does (the same main, under run_tool)."""

import importlib.util
import os

from clipreid_plugin.utils.cli import run_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_tool(name):
    """Import tools/<name>.py as a module (its main(argv) runs in-process, which is fast)."""
    spec = importlib.util.spec_from_file_location(f"usertools_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_cli(name, argv):
    """tools/<name>.py as a user runs it (main under run_tool); returns the exit code."""
    mod = load_tool(name)
    return run_tool(lambda: mod.main([str(a) for a in argv]))
