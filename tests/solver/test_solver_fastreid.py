"""fast-reid's solver semantics on tiny models, against hand-computed values.

Param-group rules (WEIGHT_DECAY_NORM, HEADS_LR_FACTOR, bias factor, freeze status), the freeze
of param groups and its checkpointed counter (the peer re-froze after a resume), fast-reid's
per-group gradient clipping, the schedules' T_max <= 0 fix, the LayerFreeze hook, and that the
trainer's step really changes the parameters (the peer's torch >= 2 zero_grad bug).
"""

import math

import pytest
import torch
from torch import nn

from clipreid_plugin.config import get_cfg
from clipreid_plugin.engine.layer_freeze import LayerFreeze
from clipreid_plugin.engine.train_loop import SimpleTrainer
from clipreid_plugin.evaluation.evaluator import inference_on_dataset
from clipreid_plugin.solver import (
    CosineAnnealingLR, MultiStepLR, build_lr_scheduler, build_optimizer, fastreid_cosine_t_max, freeze_steps_left,
)
from clipreid_plugin.utils.errors import ConfigError

from collect_outputs import CollectOutputs


class Tiny(nn.Module):
    """backbone (conv + BN) and heads (BN + bias-free linear), named as fast-reid's Baseline."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4))
        self.heads = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3, bias=False))

    def forward(self, batch):
        x = self.backbone(batch["images"]).mean((2, 3))
        logits = self.heads(x)
        return {"loss_cls": nn.functional.cross_entropy(logits, batch["targets"])}


def _cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.FUSED_OPTIMIZER = "off"
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _groups_by_name(opt):
    return {n: (g["lr"], g["weight_decay"], g["freeze_status"]) for g in opt.param_groups for n in g["names"]}


def test_param_group_rules_match_fastreid_by_hand():
    """lr 1, bias factor 2, heads factor 10, wd 0.1, wd bias 0.2, wd norm 0.3, freeze 'backbone':
    fast-reid gives norm weights 0.3, every bias (norm biases too) 0.2, heads LR x10 (x2 x10 for biases)."""
    cfg = _cfg(BASE_LR=1.0, BIAS_LR_FACTOR=2.0, HEADS_LR_FACTOR=10.0, WEIGHT_DECAY=0.1, WEIGHT_DECAY_BIAS=0.2,
               WEIGHT_DECAY_NORM=0.3, FREEZE_ITERS=5)
    cfg.MODEL.FREEZE_LAYERS = ("backbone",)
    got = _groups_by_name(build_optimizer(cfg, Tiny()))
    assert got == {
        "backbone.0.weight": (1.0, 0.1, "freeze"), "backbone.0.bias": (2.0, 0.2, "freeze"),
        "backbone.1.weight": (1.0, 0.3, "freeze"), "backbone.1.bias": (2.0, 0.2, "freeze"),
        "heads.0.weight": (10.0, 0.3, "normal"), "heads.0.bias": (20.0, 0.2, "normal"),
        "heads.1.weight": (10.0, 0.1, "normal"),
    }
    # without FREEZE_ITERS nothing is frozen, and a negative WEIGHT_DECAY_NORM keeps the usual rule
    cfg = _cfg(WEIGHT_DECAY=0.1, WEIGHT_DECAY_BIAS=0.2)
    cfg.MODEL.FREEZE_LAYERS = ("backbone",)
    got = _groups_by_name(build_optimizer(cfg, Tiny()))
    assert got["backbone.1.weight"][1:] == (0.1, "normal")


def _grads(model, value=1.0):
    for p in model.parameters():
        p.grad = torch.full_like(p, value)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(model, before):
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def test_frozen_groups_are_not_stepped_and_the_counter_survives_a_resume():
    """FREEZE_ITERS 3: steps 1-3 leave the backbone (and its Adam state) untouched; an optimizer
    restored from a checkpoint after step 2 freezes for one more step only (the peer: 3 more)."""
    torch.manual_seed(0)
    cfg = _cfg(OPTIMIZER_NAME="SGD", BASE_LR=0.1, MOMENTUM=0.0, FREEZE_ITERS=3)
    cfg.MODEL.FREEZE_LAYERS = ("backbone",)
    model = Tiny()
    opt = build_optimizer(cfg, model)
    assert freeze_steps_left(opt) == 3
    backbone = {n for n, _ in model.named_parameters() if n.startswith("backbone")}
    for _ in range(2):
        before = _snapshot(model)
        _grads(model)
        opt.step()
        assert _changed(model, before) == set(_snapshot(model)) - backbone
        assert all(p.grad is not None for p in model.parameters())  # gradients given back
    state = opt.state_dict()
    resumed_model = Tiny()
    resumed_model.load_state_dict(model.state_dict())
    resumed = build_optimizer(cfg, resumed_model)
    resumed.load_state_dict(state)
    assert freeze_steps_left(resumed) == 1
    for step, frozen in ((3, True), (4, False)):
        before = _snapshot(resumed_model)
        _grads(resumed_model)
        resumed.step()
        assert bool(_changed(resumed_model, before) & backbone) != frozen, step


def test_adam_creates_no_state_for_frozen_groups():
    cfg = _cfg(FREEZE_ITERS=1)
    cfg.MODEL.FREEZE_LAYERS = ("backbone",)
    model = Tiny()
    opt = build_optimizer(cfg, model)
    _grads(model)
    opt.step()
    assert not any(p in opt.state for p in model.backbone.parameters())
    assert all(p in opt.state for p in model.heads.parameters())


def test_clip_gradients_per_group_by_norm_and_by_value():
    """fast-reid clips each param group's (flat buffer's) gradient: with bias factor 2 the weights and
    the biases are two groups, each scaled to norm CLIP_VALUE separately (SGD lr 1: delta = -grad)."""
    model = nn.Linear(2, 2)
    cfg = _cfg(OPTIMIZER_NAME="SGD", BASE_LR=1.0, BIAS_LR_FACTOR=1.0, MOMENTUM=0.0, WEIGHT_DECAY=0.0,
               WEIGHT_DECAY_BIAS=0.5)  # two groups: weight (wd 0), bias (wd 0.5)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    opt = build_optimizer(cfg, model)
    assert len(opt.param_groups) == 2
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    model.weight.grad = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # norm 5 -> scaled by 1/5
    model.bias.grad = torch.tensor([0.3, 0.4])  # norm 0.5 -> unchanged
    opt.step()
    assert torch.allclose(model.weight, -torch.tensor([[0.6, 0.0], [0.0, 0.8]]), atol=1e-6)
    assert torch.allclose(model.bias, -torch.tensor([0.3, 0.4]), atol=1e-6)
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.35
    opt = build_optimizer(cfg, model)
    with torch.no_grad():
        model.bias.zero_()
    model.weight.grad, model.bias.grad = torch.zeros(2, 2), torch.tensor([0.3, 0.4])
    opt.step()
    assert torch.allclose(model.bias, -torch.tensor([0.3, 0.35]), atol=1e-6)


def test_clip_gradients_config_errors():
    cfg = _cfg(CLIP_GRAD_NORM=1.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    with pytest.raises(ConfigError, match="both clip"):
        build_optimizer(cfg, nn.Linear(2, 2))
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "max"
    with pytest.raises(ConfigError, match="CLIP_TYPE"):
        build_optimizer(cfg, nn.Linear(2, 2))


def test_cosine_t_max_zero_or_negative_never_crashes():
    """VeRi SBS at 50 iterations per epoch: T_max = 60 - max(60, 30) = 0 (the peer divides by zero at the
    end of the last epoch); at 40 iterations per epoch T_max = -15. Here: warmup then the base LR for all
    of training, the floor from the first cosine step on, at every position up to twice the training."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    for ipe, t_max in ((50, 0), (40, -15)):
        assert fastreid_cosine_t_max(60, ipe, 3000, 30) == t_max
        sched = CosineAnnealingLR(opt, iters_per_epoch=ipe, max_epochs=60, eta_min=7.7e-5, warmup_iters=3000,
                                  warmup_factor=0.1)
        assert sched.t_max == t_max
        assert sched.lr_at(0)[0] == pytest.approx(0.001, rel=1e-12)
        assert sched.lr_at(60 * ipe - 1)[0] == pytest.approx(0.01 if ipe * 60 > 3000 else
                                                             0.01 * (0.1 * (1 - (60 * ipe - 1) / 3000)
                                                                     + (60 * ipe - 1) / 3000), rel=1e-12)
        lrs = [sched.lr_at(i)[0] for i in range(0, 120 * ipe, 7)]
        assert all(math.isfinite(v) and v > 0 for v in lrs)
        assert sched.lr_at(120 * ipe)[0] == 7.7e-5


def test_cosine_by_hand():
    """SBS Market: 2000 warmup iterations, DELAY 30, 60 epochs, 202 it/epoch: T_max 30; the cosine's
    first step is at the end of the 31st epoch (n = 1 from iteration 31 * 202)."""
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=3.5e-4)
    sched = CosineAnnealingLR(opt, iters_per_epoch=202, max_epochs=60, eta_min=7e-7, warmup_iters=2000,
                              delay_epochs=30)
    assert sched.t_max == 30
    assert sched.lr_at(31 * 202 - 1)[0] == pytest.approx(3.5e-4, rel=1e-12)
    for n in (1, 15, 29):
        want = 7e-7 + (3.5e-4 - 7e-7) * (1 + math.cos(math.pi * n / 30)) / 2
        assert sched.lr_at((30 + n) * 202)[0] == pytest.approx(want, rel=1e-12)


def test_schedules_build_from_config_and_from_arguments():
    cfg = _cfg(WARMUP_ITERS=100, WARMUP_EPOCHS=0, WARMUP_FACTOR=0.5, STEPS_EPOCHS=(2, 4), DELAY_EPOCHS=1)
    cfg.SOLVER.SCHED.NAME = "MultiStepLR"
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    a = build_lr_scheduler(cfg, opt, 10)
    b = MultiStepLR(opt, iters_per_epoch=10, milestones=[2, 4], warmup_iters=100, warmup_factor=0.5, delay_epochs=1)
    assert isinstance(a, MultiStepLR) and a.unit == "iter"
    assert [a.lr_at(i) for i in range(200)] == [b.lr_at(i) for i in range(200)]
    # warmup ends at 100 (epoch 10 end); steps from the end of epoch 10: n = 2 at iteration 110 -> x0.1
    assert a.lr_at(109)[0] == 1.0 and a.lr_at(110)[0] == pytest.approx(0.1, rel=1e-12)


def test_warmup_key_errors():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = _cfg(WARMUP_ITERS=100, WARMUP_EPOCHS=10)
    cfg.SOLVER.SCHED.NAME = "MultiStepLR"
    with pytest.raises(ConfigError, match="both set the warmup"):
        build_lr_scheduler(cfg, opt, 10)
    cfg = _cfg(WARMUP_ITERS=100)
    cfg.SOLVER.SCHED.NAME = "WarmupMultiStepLR"
    with pytest.raises(ConfigError, match="fast-reid's schedules"):
        build_lr_scheduler(cfg, opt, 10)


class _Loader(list):
    def set_epoch(self, epoch):
        pass


def _batches(n=2):
    g = torch.Generator().manual_seed(0)
    return _Loader({"images": torch.randn(4, 3, 6, 6, generator=g), "targets": torch.tensor([0, 1, 2, 0])}
                   for _ in range(n))


def test_trainer_step_changes_the_parameters():
    """The peer's trainer on torch >= 2 never changes a parameter (zero_grad drops its flat gradient
    buffers); ours: every trainable parameter moves in one step, and the gradients do not accumulate."""
    torch.manual_seed(0)
    model = Tiny()
    cfg = _cfg()
    trainer = SimpleTrainer(model, _batches(), build_optimizer(cfg, model))
    before = _snapshot(model)
    trainer.train(0, 1)
    assert _changed(model, before) == set(before)


def test_layer_freeze_hook_keeps_the_backbone_in_eval_mode_and_untouched():
    """SOLVER.FREEZE_ITERS 2, FREEZE_LAYERS [backbone]: during iterations 0-1 the backbone's BN
    statistics and weights stay, the heads train; from iteration 2 on the backbone trains too."""
    torch.manual_seed(0)
    model = Tiny()
    cfg = _cfg(FREEZE_ITERS=2)
    cfg.MODEL.FREEZE_LAYERS = ("backbone",)
    trainer = SimpleTrainer(model, _batches(2), build_optimizer(cfg, model))
    hook = LayerFreeze(cfg)
    assert hook.freeze_layers == ("backbone",) and hook.freeze_iters == 2
    trainer.register_hooks([hook])
    backbone = _snapshot(model.backbone)
    stats = model.backbone[1].running_mean.clone()
    trainer.train(0, 1)  # iterations 0, 1: frozen
    assert not _changed(model.backbone, backbone) and torch.equal(model.backbone[1].running_mean, stats)
    assert not model.backbone.training and model.heads.training
    trainer.train(1, 2)  # iterations 2, 3: open
    assert _changed(model.backbone, backbone) and model.backbone.training


class _NormalisesInPlace(nn.Module):
    """Like fast-reid's models: normalises its input tensor in place, then a linear map."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 2 * 4, 5)
        self.register_buffer("mean", torch.tensor([100.0, 120.0, 90.0]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([50.0, 60.0, 70.0]).view(1, 3, 1, 1))

    def forward(self, batch):
        images = batch["images"]
        images.sub_(self.mean).div_(self.std)
        return self.proj(images.flatten(1))


def test_flip_test_normalises_the_flipped_copy_once():
    """The peer flips the tensor its model already normalised in place (the flipped copy is normalised
    twice; case a: the flip-averaged feature is off by 21 % in norm). Ours flips first."""
    torch.manual_seed(0)
    model = _NormalisesInPlace()
    pixels = torch.randint(0, 256, (3, 3, 2, 4)).double().float()
    got = inference_on_dataset(model, [{"images": pixels.clone()}], CollectOutputs(), flip_test=True)
    with torch.no_grad():
        norm = (pixels - model.mean) / model.std
        intended = (model.proj(norm.flatten(1)) + model.proj(torch.flip(norm, dims=[3]).flatten(1))) / 2
    assert torch.allclose(got, intended, atol=1e-5)
