"""Shared pytest fixtures."""

import os

import pytest
import torch

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


@pytest.fixture(autouse=True)
def _single_thread_determinism():
    """Keep tests reproducible and light on the 2-core CI machine."""
    torch.set_num_threads(2)
    yield
