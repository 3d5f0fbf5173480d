"""Optimizer param groups vs the reference's recorded groups, and one update step by hand."""

import os

import pytest
import torch
from torch import nn

from clipreid_plugin.config import get_cfg
from clipreid_plugin.solver import build_lr_scheduler, build_optimizer

BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "token_prefix", "token_suffix")


def _module_with_parameter_names(state_dict, frozen):
    """An nn.Module whose named_parameters() are the state dict's parameters, in the same order.

    Args:
        state_dict: the reference model's state dict (parameters and buffers).
        frozen: predicate name -> True for parameters that have requires_grad=False.
    """
    root = nn.Module()
    for key, value in state_dict.items():
        if key.endswith(BUFFER_SUFFIXES):
            continue
        *path, leaf = key.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, nn.Module())
            mod = getattr(mod, part)
        mod.register_parameter(leaf, nn.Parameter(value.float().clone(), requires_grad=not frozen(key)))
    return root


def _reference_frozen(name):
    # Stage 2 of the reference: text side and prompt learner frozen, BNNeck biases frozen (spec §4.2).
    return "text_encoder" in name or "prompt_learner" in name or (name.startswith("bottleneck") and name.endswith(".bias"))


@pytest.mark.parametrize("case", ["vit", "rn"])
def test_stage2_param_groups_match_reference(reference_dir, case):
    """On a module named like the reference model, the optimizer's groups (name, LR, weight decay)
    are exactly the reference's recorded stage-2 groups, and the scheduler keeps their base LRs."""
    path = os.path.join(reference_dir, f"case_{case}_person.pt")
    if not os.path.isfile(path):
        pytest.skip(f"{path} not found")
    d = torch.load(path, weights_only=True)
    c, ref_groups = d["meta"]["config"], d["schedules"]["stage2_param_groups"]
    cfg = get_cfg()
    cfg.SOLVER.PARAM_GROUPS = "per_tensor"  # the reference's optimizer layout
    cfg.SOLVER.OPTIMIZER_NAME = "Adam"
    cfg.SOLVER.BASE_LR = c["SOLVER.STAGE2.BASE_LR"]
    cfg.SOLVER.BIAS_LR_FACTOR = float(c["SOLVER.STAGE2.BIAS_LR_FACTOR"])
    cfg.SOLVER.WEIGHT_DECAY = c["SOLVER.STAGE2.WEIGHT_DECAY"]
    cfg.SOLVER.WEIGHT_DECAY_BIAS = c["SOLVER.STAGE2.WEIGHT_DECAY_BIAS"]
    model = _module_with_parameter_names(d["state_dict"], _reference_frozen)

    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.Adam)
    got = [{"name": g["name"], "lr": g["lr"], "weight_decay": g["weight_decay"]} for g in opt.param_groups]
    assert got == ref_groups
    assert all(len(g["params"]) == 1 for g in opt.param_groups)
    example = d["schedules"]["stage2_bias_group_example"]
    assert next(g for g in opt.param_groups if g["name"] == example)["lr"] == 2 * cfg.SOLVER.BASE_LR

    # base LRs survive the scheduler (which sets position 0's LR into "lr")
    build_lr_scheduler(cfg, opt, 1)
    assert [g["initial_lr"] for g in opt.param_groups] == [g["lr"] for g in ref_groups]

    # the default layout merges tensors of equal settings (for fused kernels): same settings per tensor
    cfg.SOLVER.PARAM_GROUPS = "merged"
    merged = build_optimizer(cfg, model)
    per_tensor = sorted((n, g["lr"], g["weight_decay"]) for g in merged.param_groups for n in g["names"])
    assert per_tensor == sorted((g["name"], g["lr"], g["weight_decay"]) for g in ref_groups)
    assert len(merged.param_groups) == len({(g["lr"], g["weight_decay"]) for g in ref_groups}) == 2


def test_stage1_style_explicit_params_and_overrides():
    """Explicit (name, parameter) pairs with their own LR, weight decay and optimizer (what the
    stage-1 hook passes): one group named after the parameter, as the reference's stage-1
    optimizer names its single group "prompt_learner.cls_ctx"."""
    cls_ctx = nn.Parameter(torch.randn(7, 4, 64))
    cfg = get_cfg()
    opt = build_optimizer(cfg, None, params=[("prompt_learner.cls_ctx", cls_ctx)], base_lr=3.5e-4,
                          weight_decay=1e-4, optimizer_name="Adam")
    assert isinstance(opt, torch.optim.Adam)
    assert [g["name"] for g in opt.param_groups] == ["prompt_learner.cls_ctx"]
    assert opt.param_groups[0]["lr"] == 3.5e-4 and opt.param_groups[0]["weight_decay"] == 1e-4
    assert opt.param_groups[0]["params"][0] is cls_ctx


def _one_step(name, momentum=0.9, nesterov=False):
    """One optimizer step on p = [1, -2] with gradient [0.5, 0.25], lr 0.1, weight decay 0.2."""
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER_NAME = name
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 0.2
    cfg.SOLVER.MOMENTUM = momentum
    cfg.SOLVER.NESTEROV = nesterov
    p = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = build_optimizer(cfg, None, params=[("w", p)])
    p.grad = torch.tensor([0.5, 0.25], dtype=torch.float64)
    opt.step()
    return p.detach(), opt


def test_update_rules_by_hand():
    p0, g, lr, wd, eps = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.5, 0.25], dtype=torch.float64), 0.1, 0.2, 1e-8
    # Adam, coupled L2: g' = g + wd p; the first bias-corrected step is lr * g' / (|g'| + eps)
    gc = g + wd * p0  # [0.7, -0.15]
    p, opt = _one_step("Adam")
    assert isinstance(opt, torch.optim.Adam)
    torch.testing.assert_close(p, p0 - lr * gc / (gc.abs() + eps), rtol=0, atol=1e-15)
    # AdamW: decay p by (1 - lr wd), then the Adam step on g alone
    p, opt = _one_step("AdamW")
    assert isinstance(opt, torch.optim.AdamW)
    torch.testing.assert_close(p, p0 * (1 - lr * wd) - lr * g / (g.abs() + eps), rtol=0, atol=1e-15)
    # SGD with momentum: the first step's buffer is g' itself
    p, opt = _one_step("SGD")
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    torch.testing.assert_close(p, p0 - lr * gc, rtol=0, atol=1e-15)
    # Nesterov: step along g' + momentum * buffer = 1.9 g'
    p, _ = _one_step("SGD", nesterov=True)
    torch.testing.assert_close(p, p0 - lr * 1.9 * gc, rtol=0, atol=1e-15)


def test_frozen_parameters_are_skipped_and_biases_get_their_factor():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 1e-3
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0
    cfg.SOLVER.WEIGHT_DECAY = 5e-4
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model[1].bias.requires_grad_(False)
    opt = build_optimizer(cfg, model)
    assert [(g["names"], g["lr"], g["weight_decay"]) for g in opt.param_groups] == [
        (["0.weight", "1.weight"], 1e-3, 5e-4), (["0.bias"], 2e-3, 0.0)]
    cfg.SOLVER.PARAM_GROUPS = "per_tensor"
    opt = build_optimizer(cfg, model)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in opt.param_groups] == [
        ("0.weight", 1e-3, 5e-4), ("0.bias", 2e-3, 0.0), ("1.weight", 1e-3, 5e-4)]


def test_fused_kernels_are_chosen_by_device_and_setting():
    cfg = get_cfg()
    model = nn.Linear(2, 2)
    assert build_optimizer(cfg, model).defaults.get("fused") in (None, False)  # "auto" on a CPU: default kernels
    cfg.SOLVER.FUSED_OPTIMIZER = "on"
    opt = build_optimizer(cfg, model)
    assert opt.defaults["fused"] is True
    model.weight.grad = torch.ones(2, 2)
    model.bias.grad = torch.ones(2)
    opt.step()  # fused Adam runs on the CPU too
    cfg.SOLVER.FUSED_OPTIMIZER = "off"
    assert build_optimizer(cfg, model).defaults["foreach"] is False


def test_bad_optimizer_settings_give_clear_errors():
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER_NAME = "Adamw"
    with pytest.raises(ValueError, match=r"SOLVER.OPTIMIZER_NAME: No object named 'Adamw'.*Registered names: Adam, AdamW, SGD"):
        build_optimizer(cfg, nn.Linear(2, 2))
    cfg.SOLVER.OPTIMIZER_NAME = "SGD"
    cfg.SOLVER.NESTEROV = True
    cfg.SOLVER.MOMENTUM = 0.0
    with pytest.raises(ValueError, match="SOLVER.MOMENTUM"):
        build_optimizer(cfg, nn.Linear(2, 2))
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="No trainable parameters"):
        build_optimizer(get_cfg(), frozen)
