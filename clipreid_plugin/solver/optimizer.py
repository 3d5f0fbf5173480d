"""Optimizers with one param group per parameter tensor, as the reference builds them.

The reference (CLIP-ReID ``make_optimizer_2stage``, TransReID ``make_optimizer``) walks
``named_parameters()`` and gives every trainable tensor its own group: biases (any name
containing "bias") get ``BASE_LR * BIAS_LR_FACTOR`` and ``WEIGHT_DECAY_BIAS``, everything else
``BASE_LR`` and ``WEIGHT_DECAY``. The settings of every tensor are the reference's; by default
the tensors with the same settings then share one group (``SOLVER.PARAM_GROUPS`` "merged"), so
that fused / foreach kernels update them together; "per_tensor" keeps the reference's layout.
Every group records its tensors' ``names``.

A module of the model may give its own parameters other settings (a parameter group of its
own, e.g. a center loss's class centers with a larger LR) by defining
``optimizer_overrides() -> dict`` (keys of a param group such as ``lr``, ``weight_decay``):
the values replace the computed ones for every parameter below that module (the innermost
module that defines it wins). The LR schedule then scales that LR like every other.

fast-reid's settings (``get_default_optimizer_params``) are the same walk with three more
rules, all off by default: parameters of normalisation layers take ``SOLVER.WEIGHT_DECAY_NORM``
(then the bias rule applies to their biases, as there), parameters of the model's child
``heads`` have their LR multiplied by ``SOLVER.HEADS_LR_FACTOR``, and every group carries a
``freeze_status`` ("freeze" for parameters whose name ``re.match``-es a ``MODEL.FREEZE_LAYERS``
pattern while ``SOLVER.FREEZE_ITERS > 0``, else "normal"). Merged groups are then keyed by
(freeze_status, lr, weight_decay) in first-seen order: exactly the groups fast-reid's
``ContiguousParams`` builds. Freezing and fast-reid's gradient clipping are optimizer step
hooks (:mod:`.freeze`, :mod:`.clipping`), so every trainer and training phase gets them.
"""

import re
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch
from torch import nn

from clipreid_plugin.config.configurable import configurable
from clipreid_plugin.utils.errors import ConfigError
from clipreid_plugin.utils.registry import Registry

from .clipping import add_gradient_clipping
from .freeze import add_group_freeze

__all__ = ["OPTIMIZER_REGISTRY", "NORM_MODULE_TYPES", "build_param_groups", "build_optimizer", "module_overrides",
           "merge_param_groups", "norm_parameter_names"]

# Normalisation layers whose parameters take SOLVER.WEIGHT_DECAY_NORM (fast-reid's list).
NORM_MODULE_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
)

OPTIMIZER_REGISTRY = Registry("OPTIMIZER", training_keys=["SOLVER.OPTIMIZER_NAME"])
OPTIMIZER_REGISTRY.__doc__ = """
Optimizers by ``SOLVER.OPTIMIZER_NAME``. A registered class or function is built as
``obj(cfg, param_groups=..., lr=...)`` (the configurable convention): the parameter groups
:func:`build_optimizer` made (each with its own ``lr`` / ``weight_decay``) and the default LR.
"""


def _kernels(groups, mode: str) -> dict:
    """``fused`` / ``foreach`` options from ``SOLVER.FUSED_OPTIMIZER`` ("auto": fused on a GPU)."""
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"SOLVER.FUSED_OPTIMIZER must be 'auto', 'on' or 'off', got {mode!r}.")
    on_gpu = all(p.is_cuda for g in groups for p in g["params"])
    if mode == "on" or (mode == "auto" and on_gpu):
        return {"fused": True}
    return {"foreach": False} if mode == "off" else {}


def _common_args(cfg, param_groups, lr) -> dict:
    return {"param_groups": param_groups, "lr": lr, "fused": cfg.SOLVER.FUSED_OPTIMIZER}


def _sgd_args(cfg, param_groups, lr) -> dict:
    return dict(_common_args(cfg, param_groups, lr), momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV)


@OPTIMIZER_REGISTRY.register()
@configurable(from_config=_common_args)
def Adam(*, param_groups, lr: float, fused: str = "auto") -> torch.optim.Optimizer:  # noqa: N802 - config name
    """torch Adam: coupled L2 (weight decay added to the gradient), as the reference's."""
    return torch.optim.Adam(param_groups, lr=lr, **_kernels(param_groups, fused))


@OPTIMIZER_REGISTRY.register()
@configurable(from_config=_common_args)
def AdamW(*, param_groups, lr: float, fused: str = "auto") -> torch.optim.Optimizer:  # noqa: N802 - config name
    """torch AdamW: decoupled weight decay; each group carries its own ``weight_decay``."""
    return torch.optim.AdamW(param_groups, lr=lr, **_kernels(param_groups, fused))


@OPTIMIZER_REGISTRY.register()
@configurable(from_config=_sgd_args)
def SGD(*, param_groups, lr: float, momentum: float = 0.9, nesterov: bool = False,  # noqa: N802 - config name
        fused: str = "auto") -> torch.optim.Optimizer:
    """torch SGD with ``SOLVER.MOMENTUM`` and ``SOLVER.NESTEROV``."""
    if nesterov and momentum <= 0:
        raise ConfigError(f"SOLVER.NESTEROV is True but SOLVER.MOMENTUM is {momentum}: Nesterov needs momentum > 0.")
    return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, nesterov=nesterov, **_kernels(param_groups, fused))


def merge_param_groups(groups: List[dict]) -> List[dict]:
    """Combine per-tensor groups with the same settings into one group each (first-seen order).

    Fused and foreach optimizer kernels work per group, so one group per tensor would launch a
    kernel per tensor. Every parameter keeps its own settings; each merged group lists its
    tensors' names in ``names`` (``name`` is the first of them).

    Args:
        groups: :func:`build_param_groups` output.

    Returns:
        The merged groups.
    """
    merged: Dict[tuple, dict] = {}
    for g in groups:
        key = tuple(sorted((k, v) for k, v in g.items() if k not in ("params", "name", "names")))
        if key not in merged:
            merged[key] = {**{k: v for k, v in g.items() if k not in ("params", "names")}, "params": [], "names": []}
        merged[key]["params"].extend(g["params"])
        merged[key]["names"].extend(g["names"])
    return list(merged.values())




def module_overrides(model: nn.Module) -> Dict[str, dict]:
    """Param-group settings that modules of ``model`` declare for their own parameters.

    Args:
        model: the model; a module with an ``optimizer_overrides()`` method claims every
            parameter below it (an inner module's claim wins over an outer one's).

    Returns:
        ``{parameter name: {group key: value}}``.
    """
    result: Dict[str, dict] = {}
    for prefix, module in model.named_modules():  # pre-order: inner modules come later and win
        fn = getattr(module, "optimizer_overrides", None)
        if callable(fn):
            values = dict(fn())
            for name, _ in module.named_parameters(prefix=prefix):
                result[name] = values
    return result


def norm_parameter_names(model: nn.Module) -> Set[str]:
    """Returns: the names of the parameters that belong directly to a normalisation layer of ``model``."""
    return {f"{prefix}.{name}" if prefix else name
            for prefix, module in model.named_modules() if isinstance(module, NORM_MODULE_TYPES)
            for name, _ in module.named_parameters(recurse=False)}


def build_param_groups(named_params: Iterable[Tuple[str, nn.Parameter]], base_lr: float, weight_decay: float,
                       weight_decay_bias: float, bias_lr_factor: float,
                       overrides: Optional[Dict[str, dict]] = None, *,
                       norm_names: Optional[Set[str]] = None, weight_decay_norm: Optional[float] = None,
                       heads_lr_factor: float = 1.0, freeze_layers: Sequence[str] = ()) -> List[dict]:
    """One param group per trainable tensor, in the given order.

    Args:
        named_params: (name, parameter) pairs, e.g. ``model.named_parameters()``; parameters
            with ``requires_grad=False`` are skipped (frozen BN biases, a frozen text tower).
        base_lr: LR of non-bias tensors.
        weight_decay: weight decay of non-bias tensors.
        weight_decay_bias: weight decay of tensors whose name contains "bias".
        bias_lr_factor: LR multiplier of tensors whose name contains "bias".
        overrides: ``{name: {group key: value}}`` replacing the computed settings of those
            parameters (see :func:`module_overrides`).
        norm_names: names of parameters of normalisation layers (:func:`norm_parameter_names`).
        weight_decay_norm: weight decay of those (None = the usual rule); a norm layer's bias
            still takes ``weight_decay_bias``, as fast-reid.
        heads_lr_factor: LR multiplier of parameters under the top-level module ``heads``.
        freeze_layers: ``re.match`` patterns; a matching parameter's group has
            ``freeze_status`` "freeze" (else "normal").

    Returns:
        List of dicts ``{"params": [p], "name": name, "names": [name], "lr": ..., "weight_decay": ...,
        "freeze_status": ...}``.
    """
    overrides = overrides or {}
    norm_names = norm_names or set()
    patterns = [re.compile(p) for p in freeze_layers]
    groups = []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        is_bias = "bias" in name  # substring, as the reference: in_proj_bias, ln_pre.bias, ...
        wd = weight_decay_norm if (weight_decay_norm is not None and name in norm_names) else weight_decay
        lr = base_lr * bias_lr_factor if is_bias else base_lr
        if heads_lr_factor != 1.0 and name.split(".")[0] == "heads":
            lr = lr * heads_lr_factor
        groups.append({
            "params": [param],
            "name": name,
            "names": [name],
            "lr": lr,
            "weight_decay": weight_decay_bias if is_bias else wd,
            "freeze_status": "freeze" if any(p.match(name) for p in patterns) else "normal",
            **overrides.get(name, {}),
        })
    return groups


def build_optimizer(cfg, model: Optional[nn.Module], base_lr: Optional[float] = None,
                    weight_decay: Optional[float] = None, weight_decay_bias: Optional[float] = None,
                    bias_lr_factor: Optional[float] = None, optimizer_name: Optional[str] = None,
                    params: Optional[Iterable[Tuple[str, nn.Parameter]]] = None) -> torch.optim.Optimizer:
    """Build the optimizer over ``model``'s trainable parameters (or over ``params``).

    Values not passed explicitly come from ``cfg.SOLVER`` (``BASE_LR``, ``WEIGHT_DECAY``,
    ``WEIGHT_DECAY_BIAS``, ``BIAS_LR_FACTOR``, ``OPTIMIZER_NAME``, ``MOMENTUM``, ``NESTEROV``).
    With a model, fast-reid's ``WEIGHT_DECAY_NORM``, ``HEADS_LR_FACTOR`` and
    ``MODEL.FREEZE_LAYERS`` / ``FREEZE_ITERS`` apply too, and ``SOLVER.CLIP_GRADIENTS`` in any case.
    A training phase with parameters of its own (CLIP-ReID's prompt learning) passes its own
    parameter list and values, e.g.
    ``build_optimizer(cfg, None, params=[("prompt_learner.cls_ctx", p)], base_lr=3.5e-4,
    weight_decay=1e-4, optimizer_name="Adam")``.

    Args:
        cfg: the config.
        model: the model whose ``named_parameters()`` are optimised (ignored when ``params`` is given).
        base_lr, weight_decay, weight_decay_bias, bias_lr_factor, optimizer_name: overrides of
            the ``SOLVER`` values.
        params: explicit (name, parameter) pairs to optimise instead of the model's.

    Returns:
        A torch optimizer with one group per distinct setting (``SOLVER.PARAM_GROUPS`` "merged")
        or per trainable tensor ("per_tensor", the reference's layout); keys ``names`` (the
        tensors' names), ``name``, ``lr``, ``weight_decay``, ``freeze_status``; each group's ``lr``
        is its base LR for the LR scheduler. Fused kernels on a GPU (``SOLVER.FUSED_OPTIMIZER``).
    """
    s = cfg.SOLVER
    name = s.OPTIMIZER_NAME if optimizer_name is None else optimizer_name
    OPTIMIZER_REGISTRY.get_for_key(name, "SOLVER.OPTIMIZER_NAME" if optimizer_name is None else "optimizer_name", cfg)
    base_lr = s.BASE_LR if base_lr is None else base_lr
    overrides = None
    fastreid_rules = {}
    if params is None:
        if model is None:
            raise ValueError("build_optimizer needs a model or an explicit `params` list of (name, parameter).")
        params = model.named_parameters()
        overrides = module_overrides(model)
        freeze = int(s.FREEZE_ITERS) > 0 and len(cfg.MODEL.FREEZE_LAYERS) > 0
        fastreid_rules = dict(
            norm_names=norm_parameter_names(model) if s.WEIGHT_DECAY_NORM >= 0 else None,
            weight_decay_norm=float(s.WEIGHT_DECAY_NORM) if s.WEIGHT_DECAY_NORM >= 0 else None,
            heads_lr_factor=float(s.HEADS_LR_FACTOR),
            freeze_layers=tuple(cfg.MODEL.FREEZE_LAYERS) if freeze else (),
        )
    groups = build_param_groups(
        params, base_lr,
        s.WEIGHT_DECAY if weight_decay is None else weight_decay,
        s.WEIGHT_DECAY_BIAS if weight_decay_bias is None else weight_decay_bias,
        s.BIAS_LR_FACTOR if bias_lr_factor is None else bias_lr_factor,
        overrides, **fastreid_rules,
    )
    if not groups:
        raise ValueError("No trainable parameters to optimise: every parameter has requires_grad=False.")
    layout = cfg.SOLVER.PARAM_GROUPS
    if layout not in ("merged", "per_tensor"):
        raise ConfigError(f"SOLVER.PARAM_GROUPS must be 'merged' or 'per_tensor', got {layout!r}.")
    if layout == "merged":
        groups = merge_param_groups(groups)
    optimizer = OPTIMIZER_REGISTRY.build(name, cfg, param_groups=groups, lr=base_lr)
    if fastreid_rules.get("freeze_layers"):
        add_group_freeze(optimizer, int(s.FREEZE_ITERS))
    add_gradient_clipping(cfg, optimizer)
    return optimizer
