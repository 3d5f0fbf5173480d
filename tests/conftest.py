"""Shared pytest fixtures."""

import os

# Idle OpenMP threads sleep instead of spinning: the suite runs tools in subprocesses beside the
# pytest process (torchrun workers, the demo), and spinning threads competing for 2 cores made
# steps several times slower (benchmarks/omp_wait_policy.py). Set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reference_dir() -> str:
    return os.environ.get(
        "CLIPREID_REFERENCE_DIR", os.path.join(os.path.dirname(REPO_ROOT), "shared", "reference")
    )


@pytest.fixture(scope="session")
def reference_dir() -> str:
    """Folder of the reference implementation's tensors (../shared/reference); skip if absent."""
    path = _reference_dir()
    if not os.path.isdir(path):
        pytest.skip(f"reference tensors not found at {path} (set CLIPREID_REFERENCE_DIR)")
    return path


@pytest.fixture(scope="session")
def shared_parity_run(reference_dir):
    """Factory: "float32" | "float64" -> :class:`parity_runs.ParityRun` of tools/check_parity.py on
    both shared reference cases of that precision, run once per session (skips without them)."""
    from parity_runs import run_shared_cases

    runs = {}

    def get(dtype):
        if dtype not in runs:
            runs[dtype] = run_shared_cases(reference_dir, dtype)
        return runs[dtype]

    return get


# Every training of the suite runs with the same number of threads: a reduction split over
# another number of threads sums in another order, so a module-scoped fixture's run (set up
# before any function fixture) and a test's resumed run would differ in the last bits. Set at
# import as well as per test (a test may change it).
TEST_THREADS = 2
torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True)
def _single_thread_determinism():
    """Keep tests reproducible and light on the 2-core CI machine."""
    torch.set_num_threads(TEST_THREADS)
    yield
