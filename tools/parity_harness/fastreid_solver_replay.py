"""Replay of fast-reid's solver for the peer cases (``../shared/reference/peers``, cases a..g).

Development tooling (never imported by the package). It rebuilds, with this toolkit's solver,
what fast-reid's ``build_optimizer`` / ``build_lr_scheduler`` / ``LRScheduler`` and
``LayerFreeze`` hooks did for one case file, and returns :class:`ParityRow` rows for:

* ``optimizer``: the optimizer class, the merged param groups (freeze status, LR at iteration
  0, weight decay, numel, parameter names in fast-reid's flat-buffer order, the Adam / SGD
  hyper-parameters) and every parameter's own LR / weight decay / freeze status;
* ``schedule`` and ``schedule_small_epochs``: the LR of every group at every recorded
  iteration, the LR at each epoch start, the cosine ``T_max``, which iterations the
  ``LayerFreeze`` hook freezes and for how many optimizer steps the freeze groups are skipped;
* ``step`` (regime ``train``, freeze counter burned as the case did) and
  ``train_freeze_phase.step`` (the real iteration 0 with the freeze active): one optimizer step
  from fresh state at the iteration-0 LR, on the gradients the caller left in the model.

The config is the case's own fast-reid config (``meta.config_yaml``) converted with
:func:`clipreid_plugin.usertools.fastreid_config.convert_fastreid_config`; only its ``SOLVER``
keys and ``MODEL.FREEZE_LAYERS`` are used here (the model is the caller's).

The caller passes its model (whose ``named_parameters()`` are this toolkit's names) and
``to_peer``, mapping each of our parameter names to fast-reid's (identity by default). The
model part of the replay (``fastreid_replay.py``) runs forward/backward and then calls
:func:`step_rows`.

Tolerances (the case README): floating values ``|ours - ref| <= 1e-9 * max(1, |ref|)``
elementwise (digests included); names, counts and strings exact.
"""

import os
import tempfile
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

from clipreid_plugin.config import get_cfg
from clipreid_plugin.solver import build_lr_scheduler, build_optimizer
from clipreid_plugin.solver.freeze import FREEZE_KEY, freeze_steps_left
from clipreid_plugin.usertools.fastreid_config import convert_fastreid_config

from .case_replay import ParityRow

__all__ = ["FLOAT64_RTOL", "converted_case_cfg", "solver_cfg", "optimizer_rows", "schedule_rows", "step_rows", "expand_lr_changes"]

FLOAT64_RTOL = 1e-9
_TOL = f"{FLOAT64_RTOL:.0e} x max(1,|ref|)"


def _identity(name: str) -> str:
    return name


def converted_case_cfg(case: dict, keep: Callable[[str], bool] = lambda key: True):
    """A fresh config with the case's fast-reid config converted and applied (the keys ``keep`` accepts).

    Args:
        case: the loaded case file (its fast-reid YAML is ``meta.config_yaml``).
        keep: which of the converted keys to apply (default: all).

    Returns:
        A (mutable) config.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fastreid.yml")
        with open(path, "w") as f:
            f.write(case["meta"]["config_yaml"])
        ours, _ = convert_fastreid_config(path)
    cfg = get_cfg()
    for key, value in ours.items():
        if not keep(key):
            continue
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        if isinstance(node[leaf], float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # a YAML `1` where the key is a float (fast-reid's SCALE: 1)
        node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], (tuple, list)) else value
    return cfg


def solver_cfg(case: dict, iters_per_epoch: Optional[int] = None):
    """Our config for the case's solver: its fast-reid config converted, SOLVER keys and MODEL.FREEZE_LAYERS.

    Args:
        case: the loaded case file.
        iters_per_epoch: unused here (kept for symmetry with the schedule rows).

    Returns:
        A (mutable) config.
    """
    cfg = converted_case_cfg(case, lambda key: key.startswith("SOLVER.") or key == "MODEL.FREEZE_LAYERS")
    cfg.SOLVER.FUSED_OPTIMIZER = "off"  # the peer's single-tensor kernels
    return cfg


def _close(ours: float, ref: float) -> float:
    """Returns: |ours - ref| / max(1, |ref|)."""
    return abs(float(ours) - float(ref)) / max(1.0, abs(float(ref)))


def _row_values(name: str, ours: Sequence[float], ref: Sequence[float]) -> ParityRow:
    if len(ours) != len(ref):
        return ParityRow(name, float("nan"), _TOL, False, f"{len(ours)} values, reference has {len(ref)}")
    err = max((_close(a, b) for a, b in zip(ours, ref)), default=0.0)
    return ParityRow(name, err, _TOL, err <= FLOAT64_RTOL, "" if err <= FLOAT64_RTOL else "values differ")


def _row_exact(name: str, ours, ref) -> ParityRow:
    same = ours == ref
    return ParityRow(name, 0.0 if same else 1.0, "exact", same, "" if same else f"ours {ours!r} != reference {ref!r}"[:300])


def _row_tensor(name: str, ours: torch.Tensor, ref: torch.Tensor) -> ParityRow:
    if tuple(ours.shape) != tuple(ref.shape):
        return ParityRow(name, float("nan"), _TOL, False, f"shape {tuple(ours.shape)} != {tuple(ref.shape)}")
    ref64, ours64 = ref.double(), ours.detach().double()
    err = ((ours64 - ref64).abs() / ref64.abs().clamp(min=1.0)).max().item() if ref.numel() else 0.0
    return ParityRow(name, err, _TOL, err <= FLOAT64_RTOL, "" if err <= FLOAT64_RTOL else "values differ")


def _optimizer_and_schedule(cfg, model: nn.Module, iters_per_epoch: int):
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer, iters_per_epoch)
    return optimizer, scheduler


def optimizer_rows(case: dict, model: nn.Module, to_peer: Callable[[str], str] = _identity) -> List[ParityRow]:
    """Rows of ``optimizer``: class, groups and per-parameter settings at iteration 0.

    Args:
        case: the loaded case file.
        model: our model (trainable parameters as the peer's: frozen BNNeck biases excluded).
        to_peer: our parameter name -> fast-reid's.

    Returns:
        The rows.
    """
    ref = case["optimizer"]
    cfg = solver_cfg(case)
    ipe = int(case["schedule"]["iters_per_epoch"])
    optimizer, _ = _optimizer_and_schedule(cfg, model, ipe)
    rows = [_row_exact("optimizer.optimizer_class", type(optimizer).__name__,
                       ref["optimizer_class"].replace("WithFreezeLayer", "").replace("WithGradientClip", ""))]
    groups = optimizer.param_groups
    rows.append(_row_exact("optimizer.groups.count", len(groups), len(ref["groups"])))
    for g, r in zip(groups, ref["groups"]):
        k = f"optimizer.groups[{r['index']}]"
        rows.append(_row_exact(f"{k}.freeze_status", g["freeze_status"], r["freeze_status"]))
        rows.append(_row_values(f"{k}.lr", [g["lr"]], [r["lr"]]))
        rows.append(_row_values(f"{k}.weight_decay", [g["weight_decay"]], [r["weight_decay"]]))
        rows.append(_row_exact(f"{k}.numel", sum(p.numel() for p in g["params"]), r["numel"]))
        rows.append(_row_exact(f"{k}.param_names", [to_peer(n) for n in g["names"]], list(r["param_names"])))
        for hp in ("betas", "eps", "amsgrad", "momentum", "dampening", "nesterov"):
            if hp in r:
                ours = list(g[hp]) if hp == "betas" else g.get(hp)
                rows.append(_row_exact(f"{k}.{hp}", ours, list(r[hp]) if hp == "betas" else r[hp]))
    rows.append(_row_values("optimizer.initial_lr", [g["initial_lr"] for g in groups], ref["initial_lr"]))
    rows.append(_row_values("optimizer.lr_iteration0", [g["lr"] for g in groups], ref["lr_iteration0"]))
    per_tensor = cfg.clone()
    per_tensor.SOLVER.PARAM_GROUPS = "per_tensor"
    opt1 = build_optimizer(per_tensor, model)
    ours_pp = [(to_peer(g["name"]), g["lr"], g["weight_decay"], g["freeze_status"]) for g in opt1.param_groups]
    ref_pp = [(p["name"], p["lr"], p["weight_decay"], p["freeze_status"]) for p in ref["per_parameter"]]
    rows.append(_row_exact("optimizer.per_parameter.names", [o[0] for o in ours_pp], [r[0] for r in ref_pp]))
    rows.append(_row_values("optimizer.per_parameter.lr", [o[1] for o in ours_pp], [r[1] for r in ref_pp]))
    rows.append(_row_values("optimizer.per_parameter.weight_decay", [o[2] for o in ours_pp], [r[2] for r in ref_pp]))
    rows.append(_row_exact("optimizer.per_parameter.freeze_status", [o[3] for o in ours_pp], [r[3] for r in ref_pp]))
    return rows


def expand_lr_changes(change_iters: torch.Tensor, change_values: torch.Tensor, n: int) -> torch.Tensor:
    """Returns: the LR [n, groups] at every iteration from the reference's change points."""
    idx = torch.searchsorted(change_iters, torch.arange(n), right=True) - 1
    return change_values[idx]


def schedule_rows(case: dict, model: nn.Module, key: str = "schedule") -> List[ParityRow]:
    """Rows of ``schedule`` / ``schedule_small_epochs``: LR at every recorded iteration and the freeze timing.

    The scheduler is stepped after every iteration, as the trainer's LRScheduler hook does.

    Args:
        case: the loaded case file.
        model: our model (for the optimizer's groups and base LRs).
        key: "schedule" or "schedule_small_epochs".

    Returns:
        The rows.
    """
    ref = case[key]
    cfg = solver_cfg(case)
    ipe = int(ref["iters_per_epoch"])
    optimizer, scheduler = _optimizer_and_schedule(cfg, model, ipe)
    n = int(ref["iterations_recorded"])
    lrs = []
    for _ in range(n):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        scheduler.step()
    ours = torch.tensor(lrs, dtype=torch.float64)
    expected = expand_lr_changes(ref["lr_change_iters"], ref["lr_change_values"], n)
    rows = [_row_tensor(f"{key}.lr_per_iteration", ours, expected)]
    starts = torch.arange(0, n, ipe)
    rows.append(_row_tensor(f"{key}.lr_at_epoch_start", ours[starts], ref["lr_at_epoch_start"][:len(starts)]))
    rows.append(_row_exact(f"{key}.max_iter", int(cfg.SOLVER.MAX_EPOCHS) * ipe, int(ref["max_iter"])))
    if ref["lr_sched_class"] == "CosineAnnealingLR":
        rows.append(_row_exact(f"{key}.cosine_T_max", getattr(scheduler, "t_max", None), int(ref["cosine_T_max"])))
    freeze_iters = int(cfg.SOLVER.FREEZE_ITERS) if len(cfg.MODEL.FREEZE_LAYERS) else 0
    if "layerfreeze_frozen_iters" in ref:
        rows.append(_row_exact(f"{key}.layerfreeze_frozen_iters", [0, freeze_iters] if freeze_iters > 0 else [],
                               list(ref["layerfreeze_frozen_iters"])))
        # the hook freezes the model's direct children named in FREEZE_LAYERS (exact names)
        children = [c for c, _ in model.named_children()]
        rows.append(_row_exact(f"{key}.layerfreeze_modules",
                               [c for c in cfg.MODEL.FREEZE_LAYERS if c in children], list(ref["layerfreeze_modules"])))
    if "optimizer_skips_freeze_groups_for_first_n_steps" in ref:
        rows.append(_row_exact(f"{key}.optimizer_skips_freeze_groups_for_first_n_steps", freeze_steps_left(optimizer),
                               int(ref["optimizer_skips_freeze_groups_for_first_n_steps"])))
    if "group_freeze_status" in ref:
        rows.append(_row_exact(f"{key}.group_freeze_status", [g["freeze_status"] for g in optimizer.param_groups],
                               list(ref["group_freeze_status"])))
    return rows


def _digest(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().double().flatten()
    return torch.stack([t.sum(), (t * t).sum(), t.abs().max() if t.numel() else t.new_zeros(())])


def step_rows(case: dict, model: nn.Module, to_peer: Callable[[str], str] = _identity, regime: str = "train",
              names: Optional[Sequence[str]] = None) -> List[ParityRow]:
    """Rows of one optimizer step from fresh state at the iteration-0 LR, on the model's current gradients.

    Args:
        case: the loaded case file.
        model: our model, holding the case's weights and the gradients of the regime's backward.
            Its parameters are restored after the step.
        to_peer: our parameter name -> fast-reid's.
        regime: "train" (the freeze counter burned first, as the case did) or "train_freeze_phase".
        names: compare only these peer names (default: every parameter).

    Returns:
        The rows (``<regime>.step.*``).
    """
    ref = case["train"]["step"] if regime == "train" else case[regime]["step"]
    cfg = solver_cfg(case)
    optimizer, _ = _optimizer_and_schedule(cfg, model, int(case["schedule"]["iters_per_epoch"]))
    burned = 0
    if regime == "train":
        burned = freeze_steps_left(optimizer)
        for g in optimizer.param_groups:
            g[FREEZE_KEY] = 0
    rows = [_row_values(f"{regime}.step.lr_used", [g["lr"] for g in optimizer.param_groups], ref["lr_used"]),
            _row_exact(f"{regime}.step.freeze_counter_burned", burned, int(ref["freeze_counter_burned"]))]
    named = [(to_peer(n), p) for n, p in model.named_parameters()]
    before = {n: p.detach().clone() for n, p in named}
    optimizer.step()
    deltas = {n: (p.detach() - before[n]) for n, p in named}
    with torch.no_grad():
        for n, p in named:
            p.copy_(before[n])
    wanted = set(names) if names is not None else None
    unchanged = sorted(n for n, d in deltas.items() if not bool(d.abs().max() > 0) and (wanted is None or n in wanted))
    ref_unchanged = sorted(n for n in ref["params_unchanged"] if wanted is None or n in wanted)
    rows.append(_row_exact(f"{regime}.step.params_unchanged", unchanged, ref_unchanged))
    for n, d in ref["delta"].items():
        if wanted is None or n in wanted:
            rows.append(_row_tensor(f"{regime}.step.delta.{n}", deltas[n], d) if n in deltas else
                        ParityRow(f"{regime}.step.delta.{n}", float("nan"), _TOL, False, "no such parameter here"))
    for n, d in ref["delta_digest"].items():
        if wanted is None or n in wanted:
            rows.append(_row_tensor(f"{regime}.step.delta_digest.{n}", _digest(deltas[n]), d) if n in deltas else
                        ParityRow(f"{regime}.step.delta_digest.{n}", float("nan"), _TOL, False, "no such parameter here"))
    return rows
