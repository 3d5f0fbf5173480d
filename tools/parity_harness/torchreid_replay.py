"""Parity with torchreid (KaiyangZhou/deep-person-reid @ f8cd150): OSNet x1.0 and OSNet-AIN x1.0.

Development tooling behind ``tools/check_parity.py`` for the torchreid cases of
``../shared/reference/peers`` (format: that folder's README.md, cases h and i). A case holds
what torchreid's own code computed for one configuration: its full config (``meta.config_yaml``),
the seed its weights were generated from (``peer_weights.py`` beside the cases), the inputs, and
every output of evaluation, of one ``ImageTripletEngine.forward_backward`` (all layers training,
then the fixbase phase), of its optimizer and of its per-epoch LR schedule.

:func:`replay` rebuilds the same model from this toolkit's config (the case's torchreid config
translated by :func:`torchreid_to_cfg` over ``configs/Market1501/osnet_x1_0.yml`` or
``osnet_ain_x1_0.yml``), fills the weights through the torchreid checkpoint converter
(:mod:`clipreid_plugin.modeling.torchreid_checkpoint`), and recomputes every output with the code
that training and evaluation really use: the meta-architecture's forward, the registered
losses, the trainer's ``OptimizationStep``, ``build_optimizer`` / ``build_lr_scheduler`` stepped
as the ``LRScheduler`` hook steps them, and the ``FixBaseHook``.

Tolerance (README of the cases): float64, every floating value ``|ours - ref| <= 1e-9 *
max(1, |ref|)`` elementwise; float32 (forward, losses and BN buffers only: the peer's own float32
gradients are not reproducible) ``1e-4 * max(1, |ref|)``, train outputs ``1e-3``. Integers,
names and strings exactly. Collections (every gradient, every BN buffer, ...) are one row each,
whose error is the worst over the collection and whose note names the worst tensor.
"""

import math
import os
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import yaml
from torch import nn

from clipreid_plugin.config import CfgNode, load_cfg
from clipreid_plugin.engine.fixbase import FixBaseHook, resolve_open_layers
from clipreid_plugin.engine.train_loop import OptimizationStep
from clipreid_plugin.evaluation.distance import normalize_features, squared_euclidean_block
from clipreid_plugin.modeling import build_model
from clipreid_plugin.modeling.torchreid_checkpoint import convert_torchreid_state_dict, to_model_key, torchreid_prefixes
from clipreid_plugin.solver import build_lr_scheduler, build_optimizer
from clipreid_plugin.utils.errors import ConfigError

from .case_replay import CaseFormatError, ParityRow
from .fastreid_replay import load_peer_weights_module

__all__ = ["REPO", "FLOAT64_RTOL", "FLOAT32_RTOL", "FLOAT32_TRAIN_RTOL", "check_torchreid_case", "torchreid_to_cfg",
           "TorchreidReplay", "replay", "compare", "run_peer_case"]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLOAT64_RTOL = 1e-9
FLOAT32_RTOL = 1e-4
FLOAT32_TRAIN_RTOL = 1e-3
CASE_KEYS = ("meta", "weights", "inputs", "eval", "train", "train_fixbase_phase", "optimizer", "schedule")
# torchreid loss name -> (our registered loss, the key of its weight: torchreid's weight_t / weight_x)
_LOSSES = {"loss_t": ("TripletLoss", "MODEL.LOSSES.TRI.SCALE"),
           "loss_x": ("CrossEntropyLoss", "MODEL.LOSSES.CE.SCALE")}
_OPTIMIZERS = {"amsgrad": "AMSGrad", "adam": "Adam", "sgd": "SGD"}


# ---------------------------------------------------------------------------------------------
# Case and config
# ---------------------------------------------------------------------------------------------
def check_torchreid_case(case: Any, path: str) -> Dict[str, Any]:
    """Returns: ``case`` after checking its top-level keys (CaseFormatError naming the missing ones)."""
    missing = [k for k in CASE_KEYS if not isinstance(case, dict) or k not in case]
    if missing or case["meta"].get("peer") != "torchreid":
        raise CaseFormatError(f"{path}: not a torchreid peer case (lacks {', '.join(missing) or 'meta.peer torchreid'}; "
                              f"see ../shared/reference/peers/README.md).")
    return case


def _peer_weights(case_path: str):
    """The case's ``peer_weights.py`` module (:func:`.fastreid_replay.load_peer_weights_module`)."""
    try:
        return load_peer_weights_module(case_path)
    except FileNotFoundError as e:
        raise CaseFormatError(str(e)) from None


def torchreid_to_cfg(torchreid_cfg: Dict[str, Any], num_classes: int) -> CfgNode:
    """This toolkit's config of a torchreid run: our torchreid-named config file plus the run's values.

    Args:
        torchreid_cfg: torchreid's full config (``meta.config_yaml`` parsed).
        num_classes: training identities.

    Returns:
        The frozen config (``configs/Market1501/osnet_x1_0.yml`` or ``osnet_ain_x1_0.yml`` with
        the translated values as overrides).

    Raises:
        ConfigError: a torchreid value this translation does not cover.
    """
    t = {k: SimpleNamespace(**v) if isinstance(v, dict) else v for k, v in torchreid_cfg.items()}
    name = t["model"].name
    if name not in ("osnet_x1_0", "osnet_ain_x1_0"):
        raise ConfigError(f"torchreid model.name {name!r}: only osnet_x1_0 and osnet_ain_x1_0 are translated.")
    if t["train"].lr_scheduler != "cosine" or t["train"].optim not in _OPTIMIZERS or t["train"].staged_lr:
        raise ConfigError(f"torchreid train.lr_scheduler {t['train'].lr_scheduler!r} / optim {t['train'].optim!r} / "
                          f"staged_lr {t['train'].staged_lr}: only cosine, {'/'.join(_OPTIMIZERS)}, no staged LR.")
    if (t["adam"].beta1, t["adam"].beta2) != (0.9, 0.999):
        raise ConfigError(f"torchreid adam betas ({t['adam'].beta1}, {t['adam'].beta2}): only torch's (0.9, 0.999).")
    loss = t["loss"]
    weights = {"loss_t": 0.0, "loss_x": 1.0} if loss.name == "softmax" else \
        {"loss_t": float(loss.triplet["weight_t"]), "loss_x": float(loss.triplet["weight_x"])}
    # torchreid's ImageTripletEngine skips a term whose weight is 0; here that loss is not listed
    names = [_LOSSES[k][0] for k in ("loss_x", "loss_t") if weights[k] > 0]
    size = [int(t["data"].height), int(t["data"].width)]
    overrides = {
        "MODEL.BACKBONE.DEPTH": "x1_0", "MODEL.BACKBONE.WITH_AIN": name == "osnet_ain_x1_0",
        "MODEL.BACKBONE.PRETRAIN": bool(t["model"].pretrained), "MODEL.HEADS.NUM_CLASSES": int(num_classes),
        "MODEL.LOSSES.NAMES": names, "MODEL.LOSSES.CE.EPSILON": 0.1 if loss.softmax["label_smooth"] else 0.0,
        "MODEL.LOSSES.CE.SCALE": weights["loss_x"] or 1.0, "MODEL.LOSSES.TRI.SCALE": weights["loss_t"] or 1.0,
        "MODEL.LOSSES.TRI.MARGIN": float(loss.triplet["margin"]),
        "MODEL.OPEN_LAYERS": list(t["train"].open_layers), "SOLVER.FIXBASE_EPOCHS": int(t["train"].fixbase_epoch),
        "SOLVER.OPTIMIZER_NAME": _OPTIMIZERS[t["train"].optim], "SOLVER.BASE_LR": float(t["train"].lr),
        "SOLVER.WEIGHT_DECAY": float(t["train"].weight_decay),
        "SOLVER.WEIGHT_DECAY_BIAS": float(t["train"].weight_decay), "SOLVER.MAX_EPOCHS": int(t["train"].max_epoch),
        "SOLVER.IMS_PER_BATCH": int(t["train"].batch_size),
        "INPUT.SIZE_TRAIN": size, "INPUT.SIZE_TEST": size,
        "INPUT.PIXEL_MEAN": [float(v) for v in t["data"].norm_mean],
        "INPUT.PIXEL_STD": [float(v) for v in t["data"].norm_std],
        "TEST.METRIC": t["test"].dist_metric, "TEST.FEAT_NORM": bool(t["test"].normalize_feature),
    }
    if t["sampler"].train_sampler == "RandomIdentitySampler":
        overrides.update({"DATALOADER.SAMPLER": "PKSampler", "DATALOADER.NUM_INSTANCE": int(t["sampler"].num_instances)})
    config_file = os.path.join(REPO, "configs", "Market1501", f"{name}.yml")
    flat = []
    for key, value in overrides.items():
        flat += [key, repr(value) if not isinstance(value, str) else value]
    return load_cfg(config_file, flat)


# ---------------------------------------------------------------------------------------------
# Replay
# ---------------------------------------------------------------------------------------------
class TorchreidReplay:
    """One case's model, filled with the case's weights, and the name maps between the two codes.

    Args:
        case: the loaded case.
        case_path: its file (``peer_weights.py`` is looked up beside it).
        device, dtype: where and in which precision to replay.
    """

    def __init__(self, case: Dict[str, Any], case_path: str, device: str, dtype: torch.dtype):
        self.case, self.device, self.dtype = case, torch.device(device), dtype
        self.cfg = torchreid_to_cfg(yaml.safe_load(case["meta"]["config_yaml"]), case["meta"]["num_classes"])
        w = case["weights"]
        pw = _peer_weights(case_path)
        self.values = pw.fill(w["shapes"], w["seed"])
        self.digest = pw.digest(self.values)
        self.model = self.fresh_model()
        self.prefixes = torchreid_prefixes(self.model)
        self.to_peer = {to_model_key(self.prefixes, k): k for k in w["shapes"]}

    def fresh_model(self) -> nn.Module:
        """The model built from the config, filled with the case's weights through the converter."""
        model = build_model(self.cfg).to(self.device, self.dtype)
        sd = {k: torch.from_numpy(v).to(self.dtype if v.dtype.kind == "f" else torch.int64)
              for k, v in self.values.items()}
        converted, unmatched = convert_torchreid_state_dict(sd, model)
        if unmatched:
            raise ConfigError(f"torchreid tensors with no counterpart in the model: {unmatched[:5]}")
        model.load_state_dict(converted, strict=True)
        return model

    def peer_name(self, ours: str) -> str:
        """Returns: torchreid's name of one of our parameter / buffer names."""
        return self.to_peer.get(ours, ours)

    def peer_module(self, path: str) -> str:
        """Returns: torchreid's name of one of our module paths (``heads.classifier`` -> ``classifier``)."""
        for prefix in sorted((p for p in self.prefixes if p), key=len, reverse=True):
            if path.startswith(prefix):
                return path[len(prefix):]
        return path

    def module_flags(self, model: nn.Module, peer_children: Sequence[str]) -> Dict[str, Optional[bool]]:
        """The ``.training`` flag of our module for each torchreid child (None: no module here)."""
        flags = {}
        for child in peer_children:
            path = to_model_key(self.prefixes, child)
            try:
                flags[child] = model.get_submodule(path).training
            except AttributeError:  # torchreid's parameter-free global_avgpool is TorchreidHead's pooling call
                flags[child] = None
        return flags


def _batch(case: Dict[str, Any], device: torch.device, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
    inputs = case["inputs"]
    return {"images": inputs["images"].to(device, dtype), "targets": inputs["targets"].to(device),
            "camids": inputs["camids"].to(device)}


def _capture(model: nn.Module):
    """Forward hooks recording the head's output and the input / output of its ``fc``."""
    seen: Dict[str, Any] = {}
    handles = [model.heads.register_forward_hook(lambda m, i, o: seen.__setitem__("head", o))]
    fc = getattr(model.heads, "fc", None)
    if fc is not None:
        handles.append(fc.register_forward_hook(lambda m, i, o: seen.update(pool=i[0].detach(), fc=o.detach())))
    return seen, handles


def _distance(feat: torch.Tensor, metric: str) -> torch.Tensor:
    """The evaluator's distance arithmetic (clipreid_plugin.evaluation.distance) in the feature's dtype."""
    if metric == "cosine":
        n = normalize_features(feat)
        return 1.0 - n @ n.t()
    sq = torch.pow(feat, 2).sum(dim=1)
    return squared_euclidean_block(feat, feat, sq, sq)


def _digest(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().double()
    return torch.stack([t.sum(), t.pow(2).sum(), t.abs().max()])


def _train_regime(rep: TorchreidReplay, section: Dict[str, Any], fixbase: bool) -> Dict[str, Any]:
    """One training step as the trainer takes it: FixBaseHook at epoch 0 (fixbase) or all layers open."""
    model = rep.fresh_model()
    model.train()
    optimizer = build_optimizer(rep.cfg, model)  # the trainer builds it before any hook freezes
    build_lr_scheduler(rep.cfg, optimizer, 1)  # sets initial_lr / the iteration-0 LR, as the trainer
    if fixbase:
        hook = FixBaseHook(rep.cfg)
        hook.trainer = SimpleNamespace(model=model, epoch=0)
        hook.before_epoch()
    buffers_before = {n: b.clone() for n, b in model.named_buffers()}
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen, handles = _capture(model)
    batch = _batch(rep.case, rep.device, rep.dtype)
    loss_dict, _ = OptimizationStep(optimizer)(lambda: model(batch))
    for h in handles:
        h.remove()
    head = seen["head"]
    out: Dict[str, Any] = {
        "outputs.module_training_flags": rep.module_flags(model, section["outputs"]["module_training_flags"]),
        "outputs.logits": head["cls_outputs"][0], "outputs.features": head["triplet_features"][0],
        "outputs.pool_feat": seen.get("pool", head["feat"]), "outputs.fc_feat": seen.get("fc", head["feat"]),
    }
    ours_losses = _unweighted_losses(rep.cfg, model, head, batch["targets"])
    for peer_key, value in ours_losses.items():
        out[f"losses.{peer_key}"] = value
    out["loss_total"] = sum(v for k, v in loss_dict.items() if k.startswith("loss"))
    logits = head["cls_outputs"][0]
    out["engine_loss_summary"] = {**{k: float(v) for k, v in ours_losses.items()},
                                  "acc": float((logits.argmax(1) == batch["targets"]).double().mean() * 100)}
    grads = {rep.peer_name(n): p.grad for n, p in model.named_parameters() if p.grad is not None}
    out["grads"] = grads
    out["grad_digest"] = {k: _digest(g) for k, g in grads.items()}
    out["grad_samples"] = {k: g.flatten()[::section["grad_samples"][k]["stride"]]
                           for k, g in grads.items() if k in section["grad_samples"]}
    changed = {rep.peer_name(n): b for n, b in model.named_buffers() if not torch.equal(b, buffers_before[n])}
    out["bn_buffers_after_forward"] = changed
    out["bn_buffers_unchanged_by_forward"] = [rep.peer_name(n) for n, b in model.named_buffers()
                                              if torch.equal(b, buffers_before[n])]
    deltas = {rep.peer_name(n): p.detach() - params_before[n] for n, p in model.named_parameters()}
    out["step.delta"] = deltas
    out["step.delta_digest"] = {k: _digest(d) for k, d in deltas.items()}
    out["step.lr_used"] = [g["lr"] for g in optimizer.param_groups]
    out["step.params_unchanged"] = [k for k, d in deltas.items() if not bool(d.any())]
    out["open_layers"] = "all" if not fixbase else \
        [rep.peer_module(p) for p in resolve_open_layers(model, rep.cfg.MODEL.OPEN_LAYERS)]
    return out


def _unweighted_losses(cfg: CfgNode, model: nn.Module, head_outputs: Dict[str, Any],
                       targets: torch.Tensor) -> Dict[str, torch.Tensor]:
    """torchreid's ``loss_t`` / ``loss_x`` (unweighted): each of the model's loss modules applied to the
    head's training outputs, divided by its weight (torchreid's weight_t / weight_x here are SCALE keys)."""
    out = {}
    for peer_key, (loss_name, scale_key) in _LOSSES.items():
        node = cfg
        for part in scale_key.split("."):
            node = node[part]
        for module in model.losses:
            if type(module).__name__ == loss_name:
                with torch.no_grad():
                    (value,) = module(head_outputs, targets).values()
                out[peer_key] = value / float(node)
    return out


def _schedule(rep: TorchreidReplay, ref: Dict[str, Any], iters_per_epoch: int = 3) -> Dict[str, Any]:
    """The LR of every epoch as the trainer applies it (LRScheduler hook: per epoch or per iteration)."""
    model = rep.fresh_model()
    optimizer = build_optimizer(rep.cfg, model)
    scheduler = build_lr_scheduler(rep.cfg, optimizer, iters_per_epoch)
    unit = getattr(scheduler, "unit", "epoch")
    lrs = []
    for _ in range(rep.cfg.SOLVER.MAX_EPOCHS):
        if unit == "epoch":
            scheduler.step()
        for it in range(iters_per_epoch):
            if it == 0:
                lrs.append([g["lr"] for g in optimizer.param_groups])
            if unit == "iter":
                scheduler.step()
    hook = FixBaseHook(rep.cfg)
    active = [e for e in range(rep.cfg.SOLVER.MAX_EPOCHS) if hook.active(e)]
    return {
        "lr_per_epoch": torch.tensor(lrs, dtype=torch.float64),
        "T_max": float(getattr(scheduler, "t_max", math.nan)),
        "max_epoch": rep.cfg.SOLVER.MAX_EPOCHS,
        "fixbase_epochs": [active[0], active[-1] + 1] if active else [0, 0],
        "open_layers_during_fixbase": [rep.peer_module(p) for p in resolve_open_layers(model, rep.cfg.MODEL.OPEN_LAYERS)],
    }


def replay(case: Dict[str, Any], case_path: str, device: str = "cpu", dtype: torch.dtype = torch.float64
           ) -> Tuple[Dict[str, Any], TorchreidReplay]:
    """Recompute every output of a torchreid case with this toolkit.

    Returns:
        (ours, replay): ``ours`` mirrors the case's sections (``weights.digest``, ``eval.*``,
        ``train.*``, ``train_fixbase_phase.*``, ``optimizer.*``, ``schedule.*``).
    """
    rep = TorchreidReplay(case, case_path, device, dtype)
    ours: Dict[str, Any] = {"weights.digest": dict(rep.digest)}
    model = rep.fresh_model().eval()
    seen, handles = _capture(model)
    with torch.no_grad():
        feat = model(_batch(case, rep.device, dtype))
    for h in handles:
        h.remove()
    dist_input = normalize_features(feat) if rep.cfg.TEST.FEAT_NORM else feat
    ours.update({"eval.feat": feat, "eval.pool_feat": seen.get("pool", feat), "eval.fc_feat": seen.get("fc", feat),
                 "eval.dist": _distance(dist_input, rep.cfg.TEST.METRIC), "eval.dist_metric": rep.cfg.TEST.METRIC})
    for section, fixbase in (("train", False), ("train_fixbase_phase", True)):
        for k, v in _train_regime(rep, case[section], fixbase).items():
            ours[f"{section}.{k}"] = v
    optimizer = build_optimizer(rep.cfg, model)
    build_lr_scheduler(rep.cfg, optimizer, 1)
    ours["optimizer.optimizer_class"] = type(optimizer).__name__
    ours["optimizer.groups"] = [{
        "index": i, "lr": g["lr"], "initial_lr": g.get("initial_lr"), "weight_decay": g["weight_decay"],
        "betas": list(g.get("betas", ())), "eps": g.get("eps"), "amsgrad": g.get("amsgrad"),
        "param_names": [rep.peer_name(n) for n in g.get("names", [])]} for i, g in enumerate(optimizer.param_groups)]
    for k, v in _schedule(rep, case["schedule"]).items():
        ours[f"schedule.{k}"] = v
    return ours, rep


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------
def _rel_err(mine: torch.Tensor, ref: torch.Tensor) -> float:
    """max |mine - ref| / max(1, |ref|) elementwise (NaN when shapes differ)."""
    if tuple(mine.shape) != tuple(ref.shape):
        return math.nan
    if not ref.is_floating_point():
        return float((mine.long() - ref.long()).abs().max()) if ref.numel() else 0.0
    m, r = mine.detach().double().cpu(), ref.double()
    return float(((m - r).abs() / r.abs().clamp(min=1.0)).max()) if r.numel() else 0.0


def _tensor_row(name: str, mine: Any, ref: torch.Tensor, rtol: float) -> ParityRow:
    if not isinstance(mine, torch.Tensor):
        return ParityRow(name, math.nan, "-", False, "not checked: this toolkit does not produce it")
    err = _rel_err(mine, ref)
    exact = not ref.is_floating_point()
    tol = "exact" if exact else f"{rtol:.0e} max(1,|ref|)"
    ok = err == 0 if exact else err <= rtol  # False for NaN
    note = "" if ok else (f"shape {tuple(mine.shape)}, reference {tuple(ref.shape)}" if math.isnan(err)
                          else "above tolerance")
    return ParityRow(name, err, tol, ok, note)


def _collection_row(name: str, mine: Dict[str, Any], ref: Dict[str, Any], rtol: float) -> ParityRow:
    """One row for a dict of tensors: same names, worst error over all of them."""
    if set(mine) != set(ref):
        extra, missing = sorted(set(mine) - set(ref)), sorted(set(ref) - set(mine))
        return ParityRow(name, math.nan, "-", False, f"names differ: {len(missing)} missing (e.g. {missing[:2]}), "
                                                     f"{len(extra)} extra (e.g. {extra[:2]})")
    worst, worst_name, ok = 0.0, "", True
    for key, r in ref.items():
        row = _tensor_row(key, mine[key], r, rtol)
        if not row.passed:
            ok = False
        if math.isnan(row.max_abs_err) or row.max_abs_err >= worst:
            worst, worst_name = row.max_abs_err, key
            if math.isnan(worst):
                break
    tol = f"{rtol:.0e} max(1,|ref|)"
    note = "" if not ref else f"worst: {worst_name}" if ok else f"fails at {worst_name}"
    return ParityRow(f"{name} ({len(ref)})", worst, tol, ok, note)


def _exact_row(name: str, mine: Any, ref: Any) -> ParityRow:
    ok = mine == ref
    return ParityRow(name, 0.0 if ok else 1.0, "exact", ok, "" if ok else f"ours {str(mine)[:120]}, "
                                                                           f"reference {str(ref)[:120]}")


def _scalars_row(name: str, mine: Dict[str, float], ref: Dict[str, float], rtol: float) -> ParityRow:
    return _collection_row(name, {k: torch.tensor(float(v), dtype=torch.float64) for k, v in mine.items()},
                           {k: torch.tensor(float(v), dtype=torch.float64) for k, v in ref.items()}, rtol)


def _groups_rows(mine: List[Dict[str, Any]], ref: List[Dict[str, Any]], rtol: float) -> List[ParityRow]:
    if len(mine) != len(ref):
        return [ParityRow("optimizer.groups", math.nan, "-", False, f"{len(mine)} groups, reference {len(ref)}")]
    rows = []
    for g, r in zip(mine, ref):
        for key, value in r.items():
            name = f"optimizer.groups.{g['index']}.{key}"
            if isinstance(value, float):
                rows.append(_tensor_row(name, torch.tensor(float(g[key]) if g.get(key) is not None else math.nan,
                                                           dtype=torch.float64),
                                        torch.tensor(value, dtype=torch.float64), rtol))
            elif key == "betas":
                rows.append(_tensor_row(name, torch.tensor(g[key], dtype=torch.float64),
                                        torch.tensor(value, dtype=torch.float64), rtol))
            else:
                rows.append(_exact_row(name, g.get(key), value))
    return rows


def compare(case: Dict[str, Any], ours: Dict[str, Any], dtype: torch.dtype) -> List[ParityRow]:
    """One row per output of the case (collections as one row each), in the case's order.

    float32: forward, losses and BN buffers only (the rows of the other outputs are left out).
    """
    f64 = dtype == torch.float64
    rtol = FLOAT64_RTOL if f64 else FLOAT32_RTOL
    train_rtol = FLOAT64_RTOL if f64 else FLOAT32_TRAIN_RTOL
    rows = [_scalars_row("weights.digest", ours["weights.digest"], case["weights"]["digest"], FLOAT64_RTOL)]
    for key in ("feat", "pool_feat", "fc_feat", "dist"):
        ref = case["eval"][key]
        if isinstance(ref, str) and ref.startswith("same as "):
            ref = case["eval"][ref[len("same as "):]]
        rows.append(_tensor_row(f"eval.{key}", ours[f"eval.{key}"], ref, rtol))
    rows.append(_exact_row("eval.dist_metric", ours["eval.dist_metric"], case["eval"]["dist_metric"]))
    for section in ("train", "train_fixbase_phase"):
        ref, s = case[section], f"{section}."
        flags = {k: v for k, v in ours[s + "outputs.module_training_flags"].items() if v is not None}
        rows.append(_exact_row(s + "outputs.module_training_flags", flags,
                               {k: v for k, v in ref["outputs"]["module_training_flags"].items() if k in flags}))
        for key in ("logits", "features", "pool_feat", "fc_feat"):
            r = ref["outputs"][key]
            if isinstance(r, str) and r.startswith("same as "):
                r = ref["outputs"][r[len("same as "):]]
            rows.append(_tensor_row(f"{s}outputs.{key}", ours[f"{s}outputs.{key}"], r, train_rtol))
        for key, r in ref["losses"].items():
            rows.append(_tensor_row(f"{s}losses.{key}", ours.get(f"{s}losses.{key}"), r, rtol))
        rows.append(_tensor_row(s + "loss_total", ours[s + "loss_total"], ref["loss_total"], rtol))
        rows.append(_scalars_row(s + "engine_loss_summary", ours[s + "engine_loss_summary"],
                                 ref["engine_loss_summary"], rtol))
        rows.append(_collection_row(s + "bn_buffers_after_forward", ours[s + "bn_buffers_after_forward"],
                                    ref["bn_buffers_after_forward"], rtol))
        rows.append(_exact_row(s + "bn_buffers_unchanged_by_forward", ours[s + "bn_buffers_unchanged_by_forward"],
                               list(ref["bn_buffers_unchanged_by_forward"])))
        rows.append(_exact_row(s + "open_layers", ours[s + "open_layers"], ref["open_layers"]))
        if not f64:
            continue
        rows.append(_collection_row(s + "grads", {k: v for k, v in ours[s + "grads"].items() if k in ref["grads"]},
                                    ref["grads"], rtol))
        rows.append(_collection_row(s + "grad_digest", ours[s + "grad_digest"], ref["grad_digest"], rtol))
        rows.append(_collection_row(s + "grad_samples", ours[s + "grad_samples"],
                                    {k: v["values"] for k, v in ref["grad_samples"].items()}, rtol))
        step = ref["step"]
        rows.append(_collection_row(s + "step.delta", {k: v for k, v in ours[s + "step.delta"].items()
                                                       if k in step["delta"]}, step["delta"], rtol))
        rows.append(_collection_row(s + "step.delta_digest", ours[s + "step.delta_digest"], step["delta_digest"], rtol))
        rows.append(_tensor_row(s + "step.lr_used", torch.tensor(ours[s + "step.lr_used"], dtype=torch.float64),
                                torch.tensor(step["lr_used"], dtype=torch.float64), rtol))
        rows.append(_exact_row(s + "step.params_unchanged", ours[s + "step.params_unchanged"],
                               list(step["params_unchanged"])))
    if f64:
        rows.append(_exact_row("optimizer.optimizer_class", ours["optimizer.optimizer_class"],
                               case["optimizer"]["optimizer_class"]))
        rows.extend(_groups_rows(ours["optimizer.groups"], case["optimizer"]["groups"], rtol))
        sched = case["schedule"]
        rows.append(_tensor_row("schedule.lr_per_epoch", ours["schedule.lr_per_epoch"], sched["lr_per_epoch"], rtol))
        rows.append(_tensor_row("schedule.T_max", torch.tensor(ours["schedule.T_max"], dtype=torch.float64),
                                torch.tensor(float(sched["T_max"]), dtype=torch.float64), rtol))
        for key in ("max_epoch", "fixbase_epochs", "open_layers_during_fixbase"):
            rows.append(_exact_row(f"schedule.{key}", ours[f"schedule.{key}"], sched[key]))
    return rows


def run_peer_case(case: Dict[str, Any], path: str, device: str = "cpu",
                  dtype: torch.dtype = torch.float64) -> List[ParityRow]:
    """Replay a torchreid case and compare (``tools/check_parity.py``'s entry point for ``meta.peer`` torchreid).

    Args:
        case: the loaded case (checked here: :func:`check_torchreid_case`).
        path: its file (``peer_weights.py`` is found beside it).
        device, dtype: where and in which precision to replay; float32 compares forward, losses
            and BN buffers only (float32 gradients are not reproducible, even by torchreid).

    Returns:
        One row per output (:func:`compare`).
    """
    check_torchreid_case(case, path)
    ours, _ = replay(case, path, device, dtype)
    return compare(case, ours, dtype)
