"""Helpers of the CLIP-ReID tests: reading the reference cases, comparing with tolerances."""

import os

import torch

# The parity library's tolerances (those of tools/check_parity.py; see its module doc).
from parity_harness.case_replay import FEATURE_ATOL, GRAD_RTOL, resolve_clip_weights

CASES = ("vit", "rn")


def load_case(reference_dir: str, name: str) -> dict:
    """The reference case ``case_<name>_person.pt`` plus the path of its tiny CLIP weights."""
    case = torch.load(os.path.join(reference_dir, f"case_{name}_person.pt"), weights_only=True)
    case["tiny_clip_path"] = resolve_clip_weights(case["meta"], reference_dir)  # meta.tiny_clip_file
    return case


def max_abs_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max absolute difference after checking shapes (the number the parity table reports)."""
    assert tuple(actual.shape) == tuple(expected.shape), (tuple(actual.shape), tuple(expected.shape))
    return (actual.detach().double().cpu() - expected.double()).abs().max().item()


# Features and losses: 1e-5, relative for values larger than 1 (the batch-hard triplet term
# alone differs by up to 7e-6 from the reference even on the reference's own features).
# Gradients: 1e-5 + GRAD_RTOL * max|ref| (the reference's own stage-1 cls_ctx gradient differs
# by 3.1e-5 from a float64 recomputation of the same step).
def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Features and losses: ``max|a - e| <= 1e-5 * max(1, max|e|)``."""
    err = max_abs_err(actual, expected)
    bound = FEATURE_ATOL * max(1.0, expected.abs().max().item())
    assert err <= bound, f"{name}: max abs err {err:.3g} > {bound:.3g}"


def assert_grad_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Gradients: ``max|a - e| <= 1e-5 + GRAD_RTOL * max|e|``."""
    err = max_abs_err(actual, expected)
    bound = FEATURE_ATOL + GRAD_RTOL * expected.abs().max().item()
    assert err <= bound, f"{name}: max abs err {err:.3g} > {bound:.3g}"
