"""The run lock under a race (issue 21): 2-4 processes started at the same instant take the lock
of one folder, fresh or left by a killed run; exactly one holds it, 200 times out of 200, and
no contender crashes. The race runs in tests/engine/lock_race.py, a small process that forks
the contenders."""

import json
import os
import subprocess
import sys

import pytest

from clipreid_plugin.engine.run_dir import LOCK_FILE, RunLock

RACE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lock_race.py")


@pytest.mark.parametrize("kind", ["fresh", "stale"])
def test_exactly_one_process_holds_the_lock(kind):
    done = subprocess.run([sys.executable, RACE, "200", kind], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    assert (counts["one_holder"], counts["several_holders"], counts["tracebacks"]) == (200, 0, 0), counts


def test_a_released_lock_is_free_and_a_nested_one_shared(tmp_path):
    outer = RunLock(str(tmp_path))
    assert outer.acquire() is None and (tmp_path / LOCK_FILE).is_file()
    inner = RunLock(str(tmp_path))  # a second run in the same process (tools/benchmark.py)
    assert inner.acquire() is None and inner.held
    inner.release()
    assert json.load(open(tmp_path / LOCK_FILE))["pid"] == os.getpid()  # still the outer run's
    outer.release()
    assert not (tmp_path / LOCK_FILE).exists()
    again = RunLock(str(tmp_path))
    assert again.acquire() is None
    again.release()
