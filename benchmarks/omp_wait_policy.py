"""Training-step time of a small CNN under OpenMP's two wait policies, alone and next to busy processes.

torch's CPU kernels run on OpenMP threads. By default (``OMP_WAIT_POLICY`` unset) an idle worker
thread spins for a while before sleeping; ``PASSIVE`` makes it sleep at once. When other
processes want the same cores, spinning threads take CPU time from the threads doing the work.
This script measures, in one run, the median time of a ResNet-18 training step (batch 32 of
128x64 images, Adam: the demo's bag-of-tricks step) with each policy, first with nothing else
running on purpose, then next to ``--busy`` processes that multiply matrices, and prints the
ratios. Every command line in ``tools/`` and ``benchmarks/`` defaults to ``OMP_WAIT_POLICY=PASSIVE``
because of it (``tools/cli_defaults.py``).

    python benchmarks/omp_wait_policy.py                 # 2 threads, 2 busy processes
    python benchmarks/omp_wait_policy.py --threads 4 --busy 4 --steps 10

Each measurement runs in a fresh process (the policy is read when OpenMP starts).
"""

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

# tools/ holds the process defaults every command line sets before torch loads
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from cli_defaults import set_cli_defaults  # noqa: E402

set_cli_defaults()  # OMP_WAIT_POLICY=PASSIVE unless set; each measurement below sets its own policy

STEP = r"""
import json, sys, time, torch, torchvision
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=40)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x, y = torch.randn(32, 3, 128, 64), torch.randint(0, 40, (32,))
times = []
for _ in range(int(sys.argv[2]) + 1):  # the first step (allocations) is left out
    t = time.perf_counter()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad()
    times.append(time.perf_counter() - t)
print(json.dumps(times[1:]))
"""


def busy_loop(stop_at: float) -> None:
    """Keep one core busy (single-threaded matrix products) until ``stop_at``."""
    import numpy as np

    os.environ["OMP_NUM_THREADS"] = "1"
    a = np.random.rand(256, 256)
    while time.time() < stop_at:
        a = a @ a
        a /= np.abs(a).max()


def median_step(policy: str, threads: int, steps: int) -> float:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", STEP, str(threads), str(steps)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return statistics.median(json.loads(out.strip().splitlines()[-1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the measured process")
    p.add_argument("--busy", type=int, default=2, help="busy processes started for the loaded measurement")
    p.add_argument("--steps", type=int, default=6, help="training steps timed per measurement")
    args = p.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; torch threads {args.threads}")
    rows = []
    for label, busy in (("nothing started", 0), (f"{args.busy} busy processes", args.busy)):
        workers = [multiprocessing.Process(target=busy_loop, args=(time.time() + 3600,), daemon=True)
                   for _ in range(busy)]
        for w in workers:
            w.start()
        try:
            res = {policy: median_step(policy, args.threads, args.steps) for policy in ("default", "PASSIVE")}
        finally:
            for w in workers:
                w.terminate()
                w.join()
        rows.append((label, res["default"], res["PASSIVE"]))
    print("\n| next to | step, default policy (s) | step, PASSIVE (s) | default / PASSIVE |")
    print("|---|---|---|---|")
    for label, d, pas in rows:
        print(f"| {label} | {d:.3f} | {pas:.3f} | {d / pas:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
