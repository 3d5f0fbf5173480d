"""Every command line in tools/ and benchmarks/ sets OMP_WAIT_POLICY=PASSIVE before torch loads,
unless the user's environment sets it (tools/cli_defaults.py)."""

import ast
import glob
import os
import subprocess
import sys

import pytest

from cli_defaults import set_cli_defaults

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# modules there that are not command lines
NOT_SCRIPTS = {"tools/cli_defaults.py", "benchmarks/bench_common.py"}
SCRIPTS = sorted(os.path.relpath(p, REPO) for pattern in ("tools/*.py", "benchmarks/*.py")
                 for p in glob.glob(os.path.join(REPO, pattern)) if os.path.relpath(p, REPO) not in NOT_SCRIPTS)
# what loads torch (and its OpenMP) when imported
LOADS_TORCH = ("torch", "torchvision", "numpy", "clipreid_plugin", "parity_harness", "bench_common", "tabulate")

# Runs a script's --help in this process and prints OMP_WAIT_POLICY as it was when torch was first imported.
RECORD = r"""
import os, runpy, sys
seen = []
class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Recorder())
sys.argv = [sys.argv[1], "--help"]
sys.path[0] = os.path.dirname(sys.argv[0])  # as `python SCRIPT` sets it
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print("OMP_WAIT_POLICY at torch import:", seen)
"""


def test_helper_sets_the_default_and_keeps_the_users_value():
    env = {}
    set_cli_defaults(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    set_cli_defaults(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_calls_the_helper_before_anything_loads_torch(script):
    """The source order that makes the default reach OpenMP: the call, then the imports of torch."""
    with open(os.path.join(REPO, script)) as f:
        body = ast.parse(f.read()).body
    call = next((i for i, node in enumerate(body) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                 and getattr(node.value.func, "id", None) == "set_cli_defaults"), None)
    assert call is not None, f"{script} does not call set_cli_defaults() at module level"
    for node in body[:call]:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        assert not [n for n in names if n.split(".")[0] in LOADS_TORCH], f"{script} imports {names} before the call"


@pytest.mark.parametrize("script, user_value, expected", [("tools/train_net.py", None, "PASSIVE"),
                                                          ("benchmarks/train_throughput.py", "ACTIVE", "ACTIVE")])
def test_the_policy_torch_starts_with(script, user_value, expected):
    """In a fresh process (OpenMP reads the variable when torch loads)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_value:
        env["OMP_WAIT_POLICY"] = user_value
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", RECORD, os.path.join(REPO, script)], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert f"OMP_WAIT_POLICY at torch import: ['{expected}']" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
