"""Fixtures of the reference parity tests: the shared cases (float32 and float64), the reference's
own float32 error per output, and CLIPBaseline models holding a case's reference weights.

Every test in this folder compares with tensors the reference implementation computed
(../shared/reference, or $CLIPREID_REFERENCE_DIR) and skips where they are absent (a user's clone).
"""

import copy
import os

import pytest
import torch

from clipreid_plugin.plugins.clipreid import convert_reference_state_dict
from clipreid_plugin.plugins.clipreid.clip_baseline import CLIPBaseline
from parity_harness.case_replay import Tolerance, load_case, parity_cfg, resolve_clip_weights, rounding_errors

from reference_cases import DTYPES


@pytest.fixture(scope="session")
def reference_case(reference_dir):
    """Factory: (name "vit" | "rn", "float32" | "float64") -> the case file (float64 from
    float64/), loaded once per session; skips when it is absent."""
    cases = {}

    def get(name, dtype="float32"):
        if (name, dtype) not in cases:
            folder = reference_dir if dtype == "float32" else os.path.join(reference_dir, "float64")
            path = os.path.join(folder, f"case_{name}_person.pt")
            if not os.path.isfile(path):
                pytest.skip(f"reference case {path} not found")
            cases[name, dtype] = load_case(path)
        return cases[name, dtype]

    return get


@pytest.fixture(scope="session")
def case_tolerance(reference_case):
    """Factory: (name, dtype) -> the harness's :class:`Tolerance` of a replay in that precision:
    float64 = the exact-parity bound; float32 = bounded by the reference's own float32 error
    (``max|ref32 - ref64|`` per output, from the two case files)."""

    def get(name, dtype):
        if dtype == "float64":
            return Tolerance(torch.float64)
        return Tolerance(torch.float32, rounding_errors(reference_case(name), reference_case(name, "float64")))

    return get


@pytest.fixture(scope="session")
def _case_models():
    return {}


@pytest.fixture
def case_model(reference_dir, reference_case, _case_models):
    """Factory: (name, dtype) -> (CLIPBaseline holding the case's reference weights in that
    precision, the reference keys it has no place for). The case's image side (encoder, BNNecks,
    classifiers, ID and triplet losses) is exactly the CLIP baseline; its config is the parity
    tool's translation of the case's reference config. Built once per case; each call returns a
    fresh deep copy (tests change modes, gradients and BN statistics)."""

    def build(name, dtype="float32"):
        if name not in _case_models:
            case = reference_case(name)
            cfg = parity_cfg(case["meta"], resolve_clip_weights(case["meta"], reference_dir))
            cfg.MODEL.META_ARCHITECTURE = "CLIPBaseline"
            cfg.MODEL.LOSSES.NAMES = ("CrossEntropyLoss", "TripletLoss")
            model = CLIPBaseline(cfg)
            new_sd, unmatched = convert_reference_state_dict(case["state_dict"], model)
            missing = model.load_state_dict(new_sd, strict=False).missing_keys
            assert missing == [], f"model keys not covered by the reference checkpoint: {missing}"
            _case_models[name] = (model, unmatched)
        model, unmatched = _case_models[name]
        return copy.deepcopy(model).to(DTYPES[dtype]), list(unmatched)

    return build
