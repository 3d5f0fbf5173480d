"""Checks shared by the CLIP weight-loading tests (local files and the reference's files)."""

import torch


def activations(model) -> set:
    """Names of the MLP activations a CLIP model uses ({"QuickGELU"}, {"GELU"} or both)."""
    return {type(m).__name__ for m in model.modules() if type(m).__name__ in ("QuickGELU", "GELU")}


def assert_same_weights(model, sd) -> None:
    """The model holds exactly the tensors of ``sd`` (same keys), floats as float32 (an fp16 -> fp32
    up-cast is exact, so equality is exact too)."""
    own = model.state_dict()
    assert set(own) == set(sd)
    for k, v in sd.items():
        assert own[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype), k
        assert torch.equal(own[k], v.to(own[k].dtype)), k
