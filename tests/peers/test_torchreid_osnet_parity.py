"""torchreid's OSNet x1.0 and OSNet-AIN x1.0 reproduced against torchreid's own tensors (peer cases h, i).

``tools/check_parity.py`` replays each case (../shared/reference/peers, made by torchreid @ f8cd150)
through this toolkit's config, converter, model, losses, trainer step, optimizer, schedule and
fixbase hook: in float64 every output the case holds passes the exact-parity bound 1e-9 x
max(1, |ref|); in float32 forward, losses and BN buffers pass torchreid's own float32 rounding bound.
Skipped without ../shared.
"""

import math
import os

import pytest
import torch

from parity_harness import torchreid_replay
from parity_runs import run_check_parity

CASES = ("torchreid_osnet_x1_0.pt", "torchreid_osnet_ain_x1_0.pt")

# every output the peers' README lists for the torchreid cases (collections are one row each)
TRAIN_ROWS = ["outputs.module_training_flags", "outputs.logits", "outputs.features", "outputs.pool_feat",
              "outputs.fc_feat", "losses.loss_t", "losses.loss_x", "loss_total", "engine_loss_summary",
              "bn_buffers_after_forward", "bn_buffers_unchanged_by_forward", "open_layers"]
GRAD_ROWS = ["grads", "grad_digest", "grad_samples", "step.delta", "step.delta_digest", "step.lr_used",
             "step.params_unchanged"]
OPTIMIZER_ROWS = ["optimizer.optimizer_class"] + [f"optimizer.groups.0.{k}" for k in
                                                  ("index", "lr", "initial_lr", "weight_decay", "betas", "eps",
                                                   "amsgrad", "param_names")]
SCHEDULE_ROWS = [f"schedule.{k}" for k in ("lr_per_epoch", "T_max", "max_epoch", "fixbase_epochs",
                                           "open_layers_during_fixbase")]
EVAL_ROWS = ["weights.digest"] + [f"eval.{k}" for k in ("feat", "pool_feat", "fc_feat", "dist", "dist_metric")]


def expected_rows(float64: bool):
    sections = ["train", "train_fixbase_phase"]
    rows = EVAL_ROWS + [f"{s}.{r}" for s in sections for r in TRAIN_ROWS + (GRAD_ROWS if float64 else [])]
    return rows + (OPTIMIZER_ROWS + SCHEDULE_ROWS if float64 else [])


def table(stdout, path):
    """{row name without its "(count)": (PASS/FAIL, max error)} of the table printed for ``path``."""
    section = stdout.split(f"== {path}", 1)[1].split("\n== ", 1)[0]
    rows = {}
    for line in section.splitlines():
        words = line.split()
        if len(words) >= 4 and ("PASS" in words or "FAIL" in words):
            err_at = 2 if words[1].startswith("(") else 1
            rows[words[0]] = ("PASS" if "PASS" in words else "FAIL", float(words[err_at]))
    return rows


def _paths(reference_dir, sub):
    paths = [os.path.join(reference_dir, "peers", *sub, name) for name in CASES]
    for p in paths:
        if not os.path.isfile(p):
            pytest.skip(f"peer case {p} not found")
    return paths


@pytest.fixture(scope="module")
def recorded(reference_dir):
    """Both float64 cases through ``check_parity.py --dtype float64``, recording each replay's outputs."""
    paths = _paths(reference_dir, ["float64"])
    replays = {}
    original = torchreid_replay.replay

    def recording(case, path, *args, **kwargs):
        ours, rep = original(case, path, *args, **kwargs)
        replays[path] = (case, ours)
        return ours, rep

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torchreid_replay, "replay", recording)
        status, out, err = run_check_parity(["--dtype", "float64"] + paths)
    return status, out, err, paths, replays


def test_float64_every_output_of_both_cases_passes(recorded):
    status, out, err, paths, _ = recorded
    assert status == 0, out[-3000:] + err[-2000:]
    for path in paths:
        rows = table(out, path)
        assert set(rows) == set(expected_rows(True)), set(rows) ^ set(expected_rows(True))
        assert {r for r, _ in rows.values()} == {"PASS"}
        assert all(err <= 1e-9 for _, err in rows.values())  # errors are relative to max(1, |ref|)
        assert f"{path}: {len(rows)}/{len(rows)} passed, 0 failed" in out
    assert "Summary: 2/2 case(s) passed." in out


def test_a_perturbed_output_fails_its_row_only(recorded):
    _, _, _, paths, replays = recorded
    case, ours = replays[paths[0]]
    ours = dict(ours)
    grads = dict(ours["train.grads"])
    grads["conv1.bn.weight"] = grads["conv1.bn.weight"] * (1 + 1e-7)
    ours["train.grads"] = grads
    ours["train.losses.loss_x"] = ours["train.losses.loss_x"] + 1e-8
    rows = {r.name.split(" ")[0]: r for r in torchreid_replay.compare(case, ours, torch.float64)}
    failed = {n for n, r in rows.items() if not r.passed}
    assert failed == {"train.grads", "train.losses.loss_x"}
    assert "conv1.bn.weight" in rows["train.grads"].note


def test_float32_forward_losses_and_bn_buffers_pass(reference_dir):
    paths = _paths(reference_dir, [])
    status, out, err = run_check_parity(paths)
    assert status == 0, out[-3000:] + err[-2000:]
    for path in paths:
        rows = table(out, path)
        assert set(rows) == set(expected_rows(False)), set(rows) ^ set(expected_rows(False))
        assert {r for r, _ in rows.values()} == {"PASS"}
    assert not math.isnan(max(e for _, e in table(out, paths[0]).values()))
