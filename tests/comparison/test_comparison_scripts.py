"""The comparison's benchmark scripts run end to end at tiny sizes (their full sizes are for a
person reading the figures): bootstrap speed, bootstrap coverage, per-query overhead."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(script, *args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script)] + list(args), capture_output=True,
                       text=True, timeout=600, env=env, cwd=REPO)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout


def test_bootstrap_speed_prints_both_timings_and_their_ratio():
    out = _run("bootstrap_speed.py", "--queries", "400", "--identities", "100", "--resamples", "200",
               "--loop-resamples", "20", "--repeats", "1")
    assert "400 queries of 100 identities x 200 resamples x 3 metrics" in out
    vec = float(re.search(r"vectorised: ([0-9.e-]+) s", out).group(1))
    loop = float(re.search(r"loop: +([0-9.e-]+) s", out).group(1))
    ratio = float(re.search(r"ratio loop / vectorised: ([0-9.]+)x", out).group(1))
    assert abs(ratio - loop / vec) <= 0.05 * ratio + 0.1


def test_bootstrap_coverage_counts_both_resampling_schemes():
    out = _run("bootstrap_coverage.py", "--repetitions", "30")
    counts = [int(n) for n in re.findall(r"in (\d+) of 30 repetitions", out)]
    assert len(counts) == 2 and all(0 <= n <= 30 for n in counts)


def test_per_query_overhead_times_every_part():
    out = _run("per_query_overhead.py", "--scale", "0.03", "--repeats", "1")
    parts = re.findall(r"^(plain|\+ per-query file|\+ top-10|\+ camera pairs) +[0-9.]+ s +x([0-9.]+)$", out, re.M)
    assert [p for p, _ in parts] == ["plain", "+ per-query file", "+ top-10", "+ camera pairs"]
    assert float(parts[0][1]) == 1.0
