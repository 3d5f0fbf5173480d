"""Race the run lock: ``python tests/engine/lock_race.py TRIALS fresh|stale [--before DIR]``.

Each trial starts 2-4 forked processes that take :class:`RunLock` of one new folder at the
same instant (a barrier releases them), on a fresh folder or on one holding the lock file of a
killed run. Every contender reports "held", "refused" (the ConfigError a second run prints) or
its traceback; holders keep the lock until every contender has reported. Prints one JSON line:
``{"trials", "one_holder", "several_holders", "tracebacks", "examples"}``.

The script loads ``clipreid_plugin/engine/run_dir.py`` and ``utils/errors.py`` without the
package's ``__init__`` (which imports torch): forking a small process keeps 200 trials to a few
seconds. ``--before DIR`` races the checkout in DIR instead (the figures of issue 21).
"""

import json
import multiprocessing
import os
import sys
import traceback
import types

_CTX = multiprocessing.get_context("fork")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_run_dir(repo: str):
    # the real modules, under their real names, with the package __init__ files skipped
    for name in ("clipreid_plugin", "clipreid_plugin.utils", "clipreid_plugin.engine"):
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(repo, *name.split("."))]
        sys.modules[name] = package
    from clipreid_plugin.engine import run_dir
    from clipreid_plugin.utils import errors
    return run_dir, errors


def _contend(run_dir, errors, out, start, decided, results):
    try:
        start.wait()
        try:
            run_dir.RunLock(out).acquire()
            outcome = "held"
        except errors.ConfigError:
            outcome = "refused"
    except BaseException:  # counted: a contender must never crash
        outcome = "crashed: " + traceback.format_exc()
    results.put(outcome)
    decided.wait()  # a holder keeps the lock (stays alive) until every contender has decided
    os._exit(0)


def race(run_dir, errors, folder: str, trials: int, stale: bool) -> dict:
    dead = _CTX.Process(target=os._exit, args=(0,))
    dead.start()
    dead.join()
    counts = {"trials": trials, "one_holder": 0, "several_holders": 0, "tracebacks": 0, "examples": []}
    for trial in range(trials):
        out = os.path.join(folder, str(trial))
        os.makedirs(out)
        if stale:  # the lock file of a killed run: its process is gone, the file stays
            with open(os.path.join(out, run_dir.LOCK_FILE), "w") as f:
                json.dump({"host": os.uname().nodename, "pid": dead.pid, "started": "2026-01-01T00:00:00"}, f)
        n = 2 + trial % 3
        start, decided, results = _CTX.Barrier(n), _CTX.Barrier(n + 1), _CTX.Queue()
        procs = [_CTX.Process(target=_contend, args=(run_dir, errors, out, start, decided, results))
                 for _ in range(n)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=30) for _ in range(n)]
        decided.wait()
        for p in procs:
            p.join()
        crashed = [o for o in outcomes if o.startswith("crashed")]
        counts["tracebacks"] += bool(crashed)
        counts["several_holders"] += outcomes.count("held") > 1
        if outcomes.count("held") == 1 and outcomes.count("refused") == n - 1:
            counts["one_holder"] += 1
        elif len(counts["examples"]) < 3:
            counts["examples"].append([o.strip().splitlines()[-1] for o in outcomes])
    return counts


if __name__ == "__main__":
    import tempfile
    repo = sys.argv[sys.argv.index("--before") + 1] if "--before" in sys.argv else REPO
    run_dir, errors = _load_run_dir(repo)
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(race(run_dir, errors, d, int(sys.argv[1]), sys.argv[2] == "stale")))
