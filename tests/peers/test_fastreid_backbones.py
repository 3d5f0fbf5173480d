"""fast-reid's ResNet (IBN-a, non-local) and ResNeSt-50, replayed against the peer's own tensors.

For cases a (BoT R50), b (BoT R50-ibn), c (AGW R50, non-local) and f (BoT S50) of
../shared/reference/peers, made by fast-reid @ c9bc3ce itself: the backbone built from the case's
fast-reid config keys, filled with the peer's weights through the fast-reid checkpoint mapping,
must give the peer's pooled feature (``heads.pool_feat``: the backbone map pooled as the case's
POOL_LAYER does) in eval and train mode, and the peer's BN buffers after the train forward.
float64 within 1e-9 x max(1, |ref|) (the peer reproduces itself to 1e-13); float32 within 1e-4.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipreid_plugin.modeling.backbones import build_backbone

from fastreid_case import backbone_cfg, load_case, load_peer_weights, model_input, peer_config, peer_state_dict, \
    peer_weights_module

CASES = ["fastreid_bot_r50", "fastreid_bot_r50_ibn", "fastreid_agw_r50", "fastreid_bot_s50"]
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


class _Holder(nn.Module):
    """A backbone under fast-reid's attribute name ``backbone`` (the heads are another branch's)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def _pool(case, fmap: torch.Tensor) -> torch.Tensor:
    """The case's POOL_LAYER, written from fast-reid's definitions (GeM: p 3, clamp 1e-6)."""
    pool = peer_config(case)["MODEL"]["HEADS"]["POOL_LAYER"]
    if pool == "GlobalAvgPool":
        return F.adaptive_avg_pool2d(fmap, 1).flatten(1)
    if pool == "GeneralizedMeanPooling":
        return F.adaptive_avg_pool2d(fmap.clamp(min=1e-6).pow(3.0), 1).pow(1.0 / 3.0).flatten(1)
    raise AssertionError(f"pooling {pool} is not a backbone-level check")


def _assert_close(ours: torch.Tensor, ref: torch.Tensor, tol: float, what: str) -> float:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, what
    err = ((ours - ref).abs() / ref.abs().clamp(min=1)).max().item()
    assert err <= tol, f"{what}: worst relative error {err:.3g} > {tol:g}"
    return err


@pytest.fixture(scope="module")
def peer_weights(reference_dir):
    return peer_weights_module(reference_dir)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", CASES)
def test_backbone_reproduces_fastreid(reference_dir, peer_weights, name, dtype):
    case = load_case(reference_dir, name, dtype)
    tdtype = getattr(torch, dtype)
    tol = TOLERANCE[dtype]
    model = _Holder(build_backbone(backbone_cfg(case))).to(tdtype)
    sd, digests = peer_state_dict(case, peer_weights, tdtype)
    for key, ref in case["weights"]["digest"].items():  # the generator reproduces the peer's weights
        assert abs(digests[key] - ref) <= 1e-9 * max(1.0, abs(ref)), key
    unmatched = load_peer_weights(model, sd)
    assert unmatched and all(k.startswith("heads.") for k in unmatched)  # every backbone tensor has a home

    x = model_input(case, tdtype)
    model.eval()
    with torch.no_grad():
        _assert_close(_pool(case, model.backbone(x).feature), case["eval"]["heads.pool_feat"], tol, "eval pool_feat")

    model.train()
    with torch.no_grad():
        train_feat = _pool(case, model.backbone(x).feature)
    _assert_close(train_feat, case["train"]["outputs"]["heads.pool_feat"], 1e-3 if dtype == "float32" else tol,
                  "train pool_feat")
    own = model.state_dict()
    buffers = {k: v for k, v in case["train"]["bn_buffers_after_forward"].items() if k.startswith("backbone.")}
    assert len(buffers) > 100
    for key, ref in buffers.items():
        if ref.is_floating_point():
            _assert_close(own[key], ref, tol, key)
        else:
            assert torch.equal(own[key], ref), key
