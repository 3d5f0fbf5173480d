"""fast-reid's solver replayed for the peer cases a..g (float64): optimizer groups, schedules, one step.

The model part of the cases is other tests' (tests/peers/test_fastreid_*): here a stand-in module
carries the peer's parameter names, shapes and module kinds (normalisation layers where the peer
has them, the BNNeck bias frozen as the peer freezes it) and the peer's weights from
``peer_weights.fill``, so fast-reid's param-group rules, schedule arithmetic and one optimizer step
are checked against what fast-reid's own code recorded. One step uses the gradients the case
stores in full (every parameter of <= 4096 elements: all BN / IN parameters, GeM's p, biases);
the rest of the step is compared by the model replay.
"""

import importlib.util
import os

import pytest
import torch
from torch import nn

from clipreid_plugin.solver import MultiStepLR
from parity_harness.fastreid_solver_replay import optimizer_rows, schedule_rows, step_rows

CASES = ["fastreid_bot_r50", "fastreid_bot_r50_ibn", "fastreid_agw_r50", "fastreid_sbs_r50_ibn",
         "fastreid_mgn_r50_ibn", "fastreid_bot_s50", "fastreid_sbs_r50_ibn_veri"]
BUFFER_ROLES = ("running_mean", "running_var", "zero_int")


def _case(reference_dir, name):
    path = os.path.join(reference_dir, "peers", "float64", f"{name}.pt")
    if not os.path.isfile(path):
        pytest.skip(f"peer case not found: {path}")
    return torch.load(path, weights_only=True)


def _peer_weights(reference_dir):
    spec = importlib.util.spec_from_file_location("peer_weights", os.path.join(reference_dir, "peers",
                                                                              "peer_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def standin_model(case, reference_dir) -> nn.Module:
    """A module tree with the peer's parameter names (state-dict order), filled with its weights.

    A module owning a ``norm_weight`` parameter is a BatchNorm1d (a normalisation layer, as the
    peer's BN / IN layers are for WEIGHT_DECAY_NORM); parameters the peer does not optimise
    (absent from ``optimizer.per_parameter``: the BNNeck biases) have requires_grad False.
    """
    shapes, roles = case["weights"]["shapes"], case["weights"]["roles"]
    values = _peer_weights(reference_dir).fill(shapes, case["weights"]["seed"])
    trainable = {p["name"] for p in case["optimizer"]["per_parameter"]}
    norm_owners = {k.rsplit(".", 1)[0] for k, r in roles.items() if r == "norm_weight"}
    root = nn.Module()
    modules = {"": root}
    for name, role in roles.items():
        if role in BUFFER_ROLES:
            continue
        owner, leaf = name.rsplit(".", 1) if "." in name else ("", name)
        if owner not in modules:
            parent_name, _, child = owner.rpartition(".")
            parent = modules[parent_name] if parent_name in modules else None
            if parent is None:  # create the intermediate path
                parent = root
                for part in parent_name.split(".") if parent_name else []:
                    if not hasattr(parent, part):
                        parent.add_module(part, nn.Module())
                    parent = getattr(parent, part)
            module = nn.BatchNorm1d(1) if owner in norm_owners else nn.Module()
            if isinstance(module, nn.BatchNorm1d):
                del module.weight, module.bias
            parent.add_module(child, module)
            modules[owner] = module
        value = torch.from_numpy(values[name]).to(torch.float64)
        modules[owner].register_parameter(leaf, nn.Parameter(value, requires_grad=name in trainable))
    assert [n for n, _ in root.named_parameters(remove_duplicate=False)] == \
        [n for n, r in roles.items() if r not in BUFFER_ROLES]
    return root


def _failures(rows):
    return [r for r in rows if not r.passed]


@pytest.mark.parametrize("name", CASES)
def test_optimizer_groups_match_fastreid(reference_dir, name):
    """Merged groups (ContiguousParams' order, freeze status, LR at iteration 0, weight decay, numel,
    names, Adam / SGD hyper-parameters) and every parameter's own LR / weight decay / freeze status."""
    case = _case(reference_dir, name)
    rows = optimizer_rows(case, standin_model(case, reference_dir))
    assert len(rows) >= 10 and not _failures(rows), _failures(rows)


@pytest.mark.parametrize("key", ["schedule", "schedule_small_epochs"])
@pytest.mark.parametrize("name", CASES)
def test_schedule_matches_fastreid(reference_dir, name, key):
    """The LR of every group at every recorded iteration (warmup, delay, milestones counted after
    warmup, cosine), the LR at each epoch start, T_max, and the freeze timing."""
    case = _case(reference_dir, name)
    rows = schedule_rows(case, standin_model(case, reference_dir), key)
    assert not _failures(rows), _failures(rows)
    assert rows[0].name.endswith("lr_per_iteration") and rows[0].max_abs_err <= 1e-12


def test_schedule_milestones_are_counted_after_warmup(reference_dir):
    """Case a (STEPS [40, 90], 2000 warmup iterations, 202 iterations per epoch): the LR drops at the
    start of the 50th and 100th epochs (0-based 49 and 99), not the 40th and 90th: in the case and in
    our schedule (hand-computed: 3.5e-4, then x0.1 from iteration 49 * 202)."""
    case = _case(reference_dir, "fastreid_bot_r50")
    start = case["schedule"]["lr_at_epoch_start"][:, 0].tolist()
    assert start[48] == start[10] == pytest.approx(3.5e-4, rel=1e-12)
    assert start[49] == pytest.approx(3.5e-5, rel=1e-12) and start[99] == pytest.approx(3.5e-6, rel=1e-12)
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=3.5e-4)
    sched = MultiStepLR(opt, iters_per_epoch=202, milestones=[40, 90], gamma=0.1, warmup_iters=2000,
                        warmup_factor=0.1)
    assert sched.lr_at(0)[0] == pytest.approx(3.5e-5, rel=1e-12)
    assert sched.lr_at(49 * 202 - 1)[0] == pytest.approx(3.5e-4, rel=1e-12)
    assert sched.lr_at(49 * 202)[0] == pytest.approx(3.5e-5, rel=1e-12)
    assert sched.lr_at(99 * 202 - 1)[0] == pytest.approx(3.5e-5, rel=1e-12)
    assert sched.lr_at(99 * 202)[0] == pytest.approx(3.5e-6, rel=1e-12)


def test_veri_short_epochs_has_t_max_zero_and_does_not_crash(reference_dir):
    """Case g at 50 iterations per epoch: T_max = 60 - max(ceil(3000/50), 30) = 0; the peer raised
    ZeroDivisionError at the end of the last epoch; our schedule reproduces every recorded LR and
    is defined past the end (the floor ETA_MIN_LR)."""
    case = _case(reference_dir, "fastreid_sbs_r50_ibn_veri")
    ref = case["schedule_small_epochs"]
    assert ref["cosine_T_max"] == 0 and "ZeroDivisionError" in ref["peer_exception"]
    rows = schedule_rows(case, standin_model(case, reference_dir), "schedule_small_epochs")
    assert not _failures(rows), _failures(rows)


@pytest.mark.parametrize("regime", ["train", "train_freeze_phase"])
@pytest.mark.parametrize("name", CASES)
def test_one_step_matches_fastreid_on_stored_gradients(reference_dir, name, regime):
    """One optimizer step from fresh state at the iteration-0 LR, on the case's full gradients:
    deltas and digests of those parameters, which stay unchanged, and the freeze counter.

    In the freeze phase every parameter of a frozen group gets a gradient of ones here and must
    stay unchanged (its group is not stepped)."""
    case = _case(reference_dir, name)
    if regime != "train" and regime not in case:
        pytest.skip(f"{name} has no {regime} (no FREEZE_LAYERS in its config)")
    model = standin_model(case, reference_dir)
    grads = case["train"]["grads"] if regime == "train" else case[regime]["grads"]
    frozen = [n for g in case["optimizer"]["groups"] if g["freeze_status"] == "freeze" for n in g["param_names"]]
    for n, p in model.named_parameters():
        if n in grads:
            p.grad = grads[n].to(torch.float64).clone()
        elif regime != "train" and n in frozen:
            p.grad = torch.ones_like(p)
    names = sorted(grads) if regime == "train" else sorted(set(grads) | set(frozen))
    rows = step_rows(case, model, regime=regime, names=names)
    assert len(rows) > 5 and not _failures(rows), _failures(rows)[:5]
    if regime != "train":  # the frozen groups were not stepped: their parameters are in params_unchanged
        assert frozen and set(frozen) <= set(case[regime]["step"]["params_unchanged"])
