"""Fixtures of the CLIP-ReID tests: the reference cases and the tiny CLIP weights they used."""

import pytest

from clipreid_refs import CASES, load_case


@pytest.fixture(scope="module", params=CASES)
def case(request, reference_dir):
    """Each reference case in turn (module-scoped: loaded once per test file)."""
    return load_case(reference_dir, request.param)
