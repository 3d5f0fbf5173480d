"""The fast-reid peer cases a..g replayed whole on the model side (tools/parity_harness/fastreid_replay.py).

Each case of ../shared/reference/peers (made by fast-reid @ c9bc3ce itself) is rebuilt from its own
fast-reid config through the config converter, filled with the peer's weights through the fast-reid
checkpoint converter, and fed the case's pixels normalised as this toolkit's loaders do. Every
model-side output must match (the solver's rows are tests/peers of i17-solver's replay):

* float64: eval feature, per-head pooled / neck features (or digests), cosine distance; training
  flags, per-head outputs, every loss and the total, full gradients, gradient digests and samples,
  BN buffers after the forward; the same in the freeze phase (LayerFreeze at iteration 0).
  Within 1e-9 x max(1, |ref|) (the peer reproduces itself to ~1e-11).
* float32: forward, losses and BN buffers (1e-4 relative; training outputs 1e-3): the peer's own
  float32 gradients change by up to 100 % between thread counts.
"""

import os

import pytest
import torch

from parity_harness.fastreid_replay import model_rows

CASES = ["fastreid_bot_r50", "fastreid_bot_r50_ibn", "fastreid_agw_r50", "fastreid_sbs_r50_ibn",
         "fastreid_mgn_r50_ibn", "fastreid_bot_s50", "fastreid_sbs_r50_ibn_veri"]


def _case(reference_dir: str, name: str, dtype: str):
    path = os.path.join(reference_dir, "peers", "float64" if dtype == "float64" else "", f"{name}.pt")
    if not os.path.isfile(path):
        pytest.skip(f"peer case not found: {path}")
    return torch.load(path, weights_only=True), path


def _check(rows, expected_prefixes):
    failed = [f"{r.name}: {r.max_abs_err:.3g} ({r.tolerance}) {r.note}" for r in rows if not r.passed]
    assert not failed, "\n".join(failed[:20])
    seen = {p for p in expected_prefixes if any(r.name.startswith(p) for r in rows)}
    assert seen == set(expected_prefixes), f"no rows for {set(expected_prefixes) - seen}"


@pytest.mark.parametrize("name", CASES)
def test_float64_every_model_output(reference_dir, name):
    case, path = _case(reference_dir, name, "float64")
    rows = model_rows(case, path, torch.float64, solver_rows=False)
    expected = ["weights.digest", "eval.feat", "eval.cosine_dist", "train.outputs.module_training_flags",
                "train.losses.", "train.loss_total", "train.grads.", "train.grad_digest.", "train.grad_samples.",
                "train.bn_buffers_after_forward.", "train.parameters_with_gradient"]
    if "train_freeze_phase" in case:
        expected += ["train_freeze_phase.frozen_by_layerfreeze", "train_freeze_phase.losses.",
                     "train_freeze_phase.grad_digest.", "train_freeze_phase.bn_buffers_after_forward.",
                     "train_freeze_phase.bn_buffers_unchanged_by_forward"]
    _check(rows, expected)
    # every reference tensor has its row (nothing skipped)
    assert sum(r.name.startswith("train.grad_digest.") for r in rows) == len(case["train"]["grad_digest"])
    assert sum(r.name.startswith("train.losses.") for r in rows) == len(case["train"]["losses"]) + 1  # + names


@pytest.mark.parametrize("name", CASES)
def test_float32_forward_losses_bn_buffers(reference_dir, name):
    case, path = _case(reference_dir, name, "float32")
    rows = model_rows(case, path, torch.float32, solver_rows=False)
    _check(rows, ["eval.feat", "eval.cosine_dist", "train.outputs.", "train.losses.", "train.loss_total",
                  "train.bn_buffers_after_forward."])
    assert not any(".grads." in r.name or ".grad_digest." in r.name for r in rows)
