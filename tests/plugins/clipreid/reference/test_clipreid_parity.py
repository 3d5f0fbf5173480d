"""CLIPReID against the reference CLIP-ReID tensors (both shared cases): every output of the
evaluation, the text side, one stage-1 step and one stage-2 step, and the stage-2 parameters.

The replays are tools/check_parity.py's own (``shared_parity_run``, recorded while the tool's
tests run it: one replay per case and precision in the whole suite), compared here tensor by
tensor with the harness's bound per output (``case_replay.tensor_bound``):

* float64 (the float64/ cases, model and inputs ``.double()``): the exact-parity check,
  ``1e-9 max(1, max|ref|)``;
* float32 (published-checkpoint use): bounded by the reference's own float32 error
  (``2 max|ref32 - ref64|``, at least the fixed float32 bounds), since float32 results depend
  on the CPU's summation order.
"""

import pytest
import torch

from parity_harness.case_replay import flatten_outputs, tensor_bound

from reference_cases import CASES, DTYPES
from reference_layout import our_name
from tiny_clip import max_err


def _misses(ours, case, tolerance, dtype):
    """Every output of the case that the replay did not produce, produced in another dtype, or
    missed by more than its bound."""
    misses = []
    for name, ref in flatten_outputs(case["outputs"]).items():
        mine = ours.get(name)
        if not isinstance(mine, torch.Tensor):
            misses.append(f"{name}: not produced")
        elif not ref.is_floating_point():
            if not torch.equal(mine, ref):
                misses.append(f"{name}: integer values differ")
        elif mine.dtype != dtype:
            misses.append(f"{name}: replayed in {mine.dtype}")
        else:
            bound, text = tensor_bound(name, ref, tolerance)
            err = max_err(mine, ref)
            if not err <= bound:
                misses.append(f"{name}: {err:.3g} > {text}")
    return misses


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", CASES)
def test_replay_matches_every_output(shared_parity_run, reference_case, case_tolerance, name, dtype):
    """Every output the reference computed (features, encoder outputs, prompts, text features,
    stage-1 losses and cls_ctx gradient, stage-2 logits, losses, BN statistics and the gradient of
    every trainable tensor), in float64 to 1e-9 and in float32 within the reference's own error."""
    case = reference_case(name, dtype)
    ours, _ = shared_parity_run(dtype).replays[case["meta"]["case"]]
    outputs = flatten_outputs(case["outputs"])
    assert len(outputs) > 150 and sum(k.startswith("stage2_grads.") for k in outputs) > 100
    misses = _misses(ours, case, case_tolerance(name, dtype), DTYPES[dtype])
    assert not misses, "\n".join(misses)


@pytest.mark.parametrize("name", CASES)
def test_stage2_trains_the_reference_optimizer_groups(shared_parity_run, reference_case, name):
    """The reference's stage-2 optimizer (make_optimizer_2stage: one group per parameter) names
    exactly the parameters CLIPReID trains in stage 2 (the stored gradients leave out the largest
    matrices, the group list does not); its widths are the case's."""
    case = reference_case(name)
    _, model = shared_parity_run("float32").replays[case["meta"]["case"]]
    groups = case["schedules"]["stage2_param_groups"]
    expected = {our_name(g["name"]) for g in groups}
    assert None not in expected and len(expected) == len(groups)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    meta = case["meta"]
    assert (model.backbone.out_features, model.backbone.proj_features) == (meta["in_planes"], meta["in_planes_proj"])
