"""Replay of a fast-reid peer case (``../shared/reference/peers``, cases a..g) with this toolkit.

Development tooling (behind ``tools/check_parity.py`` and ``tests/peers``; the package never
imports it). For one case file (format: ``peers/README.md``) it

1. builds OUR model from OUR config: the case's own fast-reid config (``meta.config_yaml``)
   converted by :func:`clipreid_plugin.usertools.fastreid_config.convert_fastreid_config`
   (the path a user's fast-reid YAML takes), with ``MODEL.HEADS.NUM_CLASSES`` from the case;
2. fills it with the peer's weights (``peer_weights.fill(weights.shapes, weights.seed)``, beside
   the case) renamed by the fast-reid checkpoint converter (the path a model-zoo file takes);
3. feeds the case's pixels the way this toolkit's loaders do: already normalised,
   ``(pixels - PIXEL_MEAN) / PIXEL_STD`` on the 0..255 scale, with fast-reid's mean / std
   buffers (float32 values, then cast to the case's dtype, as ``model.to(float64)`` left them).
   fast-reid's model normalises its input in place; here nothing is modified in place;
4. compares every model-side output: ``eval`` (feature, per-head pooled / neck features or their
   digests, the cosine distance), ``train`` (module training flags, per-head outputs, every loss
   and the total, full gradients, gradient digests and strided samples, BN buffers after the
   forward) and ``train_freeze_phase`` (the same at iteration 0 of the trainer's ``LayerFreeze``
   hook: the ``MODEL.FREEZE_LAYERS`` children in eval mode). The solver rows (optimizer groups, LR schedules, one optimizer step) come from
   :mod:`.fastreid_solver_replay` on the same model and gradients.

Tolerances (``peers/README.md``): float64 ``|ours - ref| <= 1e-9 * max(1, |ref|)`` elementwise;
float32 (forward, losses and BN buffers only: the peer's own float32 gradients are not
reproducible) ``1e-4`` relative, training outputs ``1e-3``, or twice the peer's own float32 error
(its float32 file vs its float64 twin) where that is larger; integers, names and flags exact.
Families of many tensors (gradients, digests, samples, BN buffers, step deltas) are reported as
one row each, with the worst tensor named.
"""

import importlib.util
import math
import os
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import yaml
from torch import nn

from clipreid_plugin.engine.layer_freeze import LayerFreeze
from clipreid_plugin.evaluation.distance import normalize_features
from clipreid_plugin.modeling import build_model
from clipreid_plugin.modeling.fastreid_checkpoint import convert_fastreid_state_dict, fastreid_key_rules, to_model_key

from . import fastreid_solver_replay as solver_replay
from .case_replay import ParityRow

__all__ = ["PEER", "replay_cfg", "load_peer_weights_module", "build_peer_model", "model_images", "model_rows",
           "run_peer_case", "collapse_rows"]

PEER = "fast-reid"
FLOAT64_RTOL = 1e-9
FLOAT32_RTOL = {"eval": 1e-4, "losses": 1e-4, "bn": 1e-4, "outputs": 1e-3}
ROUNDING_FACTOR = 2.0  # float32: ours and the peer's float32 results may each be off by the peer's own error
# row families reported as one row each (the worst member named)
FAMILIES = ("grads.", "grad_digest.", "grad_samples.", "bn_buffers_after_forward.", "step.delta.",
            "step.delta_digest.")


# ---------------------------------------------------------------------------------------------
# model, weights, inputs
# ---------------------------------------------------------------------------------------------

def replay_cfg(case: dict):
    """Our config for the case: its fast-reid config converted, every mapped key applied.

    Returns:
        A frozen config (pretraining off, CPU, ``MODEL.HEADS.NUM_CLASSES`` = the case's).
    """
    cfg = solver_replay.converted_case_cfg(case)
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.HEADS.NUM_CLASSES = int(case["meta"]["num_classes"])
    cfg.freeze()
    return cfg


def load_peer_weights_module(case_path: str):
    """The reference's ``peer_weights.py`` (numpy only): beside the case, or one folder up (float64/)."""
    here = os.path.dirname(os.path.abspath(case_path))
    for folder in (here, os.path.dirname(here)):
        path = os.path.join(folder, "peer_weights.py")
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("peer_weights", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError(f"{case_path}: peer_weights.py not found beside the case or in its parent folder.")


def peer_state_dict(case: dict, peer_weights, dtype: torch.dtype) -> Tuple[Dict[str, torch.Tensor], bool]:
    """The peer's state dict regenerated from (seed, name) in ``dtype``, and whether its digests match."""
    weights = case["weights"]
    arrays = peer_weights.fill(weights["shapes"], weights["seed"])
    digests = dict(peer_weights.digest(arrays))
    same = all(math.isclose(float(digests[k]), float(v), rel_tol=1e-12, abs_tol=1e-12)
               for k, v in weights["digest"].items())
    sd = {k: torch.from_numpy(np.array(a)).to(dtype if np.issubdtype(a.dtype, np.floating) else torch.int64)
          for k, a in arrays.items()}
    return sd, same


def build_peer_model(case: dict, peer_weights, dtype: torch.dtype):
    """Our model for the case, in ``dtype``, holding the peer's weights.

    Returns:
        (model, state dict loaded (our names), our name -> peer name, weights row).
    """
    model = build_model(replay_cfg(case)).to(dtype)
    sd, digests_match = peer_state_dict(case, peer_weights, dtype)
    converted, unmatched = convert_fastreid_state_dict(sd, model)
    missing = sorted(set(model.state_dict()) - set(converted))
    if unmatched or missing:
        raise ValueError(f"the peer's weights do not fit the model built from its config: peer tensors without a "
                         f"counterpart {unmatched[:5]}, model tensors not filled {missing[:5]}")
    model.load_state_dict(converted, strict=True)
    rules = fastreid_key_rules(model)
    to_peer = {to_model_key(rules, k): k for k in sd}
    row = ParityRow("weights.digest", 0.0 if digests_match else 1.0, "1e-12 rel", digests_match,
                    "" if digests_match else "peer_weights.fill does not reproduce weights.digest")
    return model, converted, to_peer, row


def _float64_twin(case_path: str) -> Optional[dict]:
    """The float64 file of a float32 case (``float64/<name>`` beside it), or None."""
    twin = os.path.join(os.path.dirname(os.path.abspath(case_path)), "float64", os.path.basename(case_path))
    return torch.load(twin, map_location="cpu", weights_only=True) if os.path.isfile(twin) else None


def model_images(case: dict, dtype: torch.dtype) -> torch.Tensor:
    """The case's pixels normalised as this toolkit's loaders give them (fast-reid's arithmetic, not in place)."""
    model_cfg = yaml.safe_load(case["meta"]["config_yaml"])["MODEL"]
    # fast-reid's buffers: torch.Tensor(list) (float32), then cast with the model
    mean = torch.tensor(model_cfg["PIXEL_MEAN"], dtype=torch.float32).to(dtype).view(1, -1, 1, 1)
    std = torch.tensor(model_cfg["PIXEL_STD"], dtype=torch.float32).to(dtype).view(1, -1, 1, 1)
    return (case["inputs"]["pixels"].to(dtype) - mean) / std


# ---------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------

def _digest(t: torch.Tensor) -> torch.Tensor:
    """float64 [sum, sum of squares, max|t|] (the case's digest)."""
    t = t.detach().double().flatten()
    return torch.stack([t.sum(), (t * t).sum(), t.abs().max() if t.numel() else t.new_zeros(())])


def _twin_value(case: dict, name: str):
    """The value of row ``name`` (``eval.<key>``, ``<regime>.outputs.<key>``, ``<regime>.losses.<key>``,
    ``<regime>.loss_total``, ``<regime>.bn_buffers_after_forward.<key>``) in another case file, or None."""
    regime, _, rest = name.partition(".")
    if regime not in case:
        return None
    if regime == "eval":
        node, key = case["eval"], rest
    elif rest == "loss_total":
        return case[regime].get("loss_total")
    else:
        section, _, key = rest.partition(".")
        node = case[regime].get(section) if section in ("outputs", "losses", "bn_buffers_after_forward") else None
    if not isinstance(node, dict) or key not in node:
        return None
    return _resolve(node, key)


class _Comparer:
    """Builds rows with the tolerance of the replay's dtype.

    In float32 the bound of a row is ``max(fixed bound, ROUNDING_FACTOR x the reference's own
    float32 error)``, the latter measured against the float64 twin file (``float64/<case>``, same
    inputs, the same weights before rounding) where there is one: float32 results depend on the
    summation order, and train-mode BatchNorm over 8 samples amplifies it.
    """

    def __init__(self, dtype: torch.dtype, twin: Optional[dict] = None):
        self.dtype = dtype
        self.twin = twin

    def tol(self, kind: str) -> float:
        return FLOAT64_RTOL if self.dtype == torch.float64 else FLOAT32_RTOL[kind]

    def tensor(self, name: str, ours, ref, kind: str) -> ParityRow:
        tol = self.tol(kind)
        label = f"{tol:.0e} x max(1,|ref|)"
        twin = _twin_value(self.twin, name) if self.twin is not None and self.dtype != torch.float64 else None
        if isinstance(twin, torch.Tensor) and twin.is_floating_point() and twin.shape == torch.as_tensor(ref).shape:
            r = torch.as_tensor(ref).double()
            own = ((r - twin.double()).abs() / r.abs().clamp(min=1.0)).max().item() if r.numel() else 0.0
            if ROUNDING_FACTOR * own > tol:
                tol = ROUNDING_FACTOR * own
                label = f"{tol:.1e} x max(1,|ref|) ({ROUNDING_FACTOR:g} x the peer's float32 error)"
        if ours is None:
            return ParityRow(name, float("nan"), label, False, "not produced here")
        ours = torch.as_tensor(ours).detach()
        ref = torch.as_tensor(ref)
        if tuple(ours.shape) != tuple(ref.shape):
            return ParityRow(name, float("nan"), label, False, f"shape {tuple(ours.shape)} != {tuple(ref.shape)}")
        if not ref.is_floating_point():
            same = torch.equal(ours.long(), ref.long())
            return ParityRow(name, 0.0 if same else 1.0, "exact", same, "" if same else "integers differ")
        r, o = ref.double(), ours.double()
        err = ((o - r).abs() / r.abs().clamp(min=1.0)).max().item() if ref.numel() else 0.0
        ok = err <= tol  # NaN fails
        return ParityRow(name, err, label, ok, "" if ok else "values differ")

    @staticmethod
    def exact(name: str, ours, ref) -> ParityRow:
        same = ours == ref
        return ParityRow(name, 0.0 if same else 1.0, "exact", same,
                         "" if same else f"ours {ours!r} != reference {ref!r}"[:300])


def _resolve(ref: dict, key: str):
    """A reference value, following ``"same as <key>"`` strings."""
    value = ref[key]
    while isinstance(value, str) and value.startswith("same as "):
        value = ref[value[len("same as "):]]
    return value


def _head_names(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(peer-side module name, head) of every head: ``heads`` (Baseline) or ``b1_head`` ... (MGN)."""
    return [(n, m) for n, m in model.named_children() if n == "heads" or n.endswith("_head")]


def _head_maps(model: nn.Module, images: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The feature map each head receives, by head module name (the meta-architecture's own code)."""
    if hasattr(model, "branch_maps"):
        return {f"{n}_head": m for n, m in model.branch_maps(images).items()}
    return {"heads": model.backbone_feature({"images": images})}


def _eval_rows(model: nn.Module, case: dict, images: torch.Tensor, cmp: _Comparer) -> List[ParityRow]:
    ref = case["eval"]
    model.eval()
    with torch.no_grad():
        feat = model({"images": images})
        maps = _head_maps(model, images)
        rows = [cmp.tensor("eval.feat", feat, ref["feat"], "eval")]
        for name, head in _head_names(model):
            pool_feat, neck_feat = head.features(maps[name])
            if f"{name}.pool_feat" in ref:
                rows.append(cmp.tensor(f"eval.{name}.pool_feat", pool_feat, _resolve(ref, f"{name}.pool_feat"), "eval"))
            if f"{name}.pool_feat_digest" in ref:
                rows.append(cmp.tensor(f"eval.{name}.pool_feat_digest", _digest(pool_feat),
                                       ref[f"{name}.pool_feat_digest"], "eval"))
            if f"{name}.neck_feat" in ref:
                rows.append(cmp.tensor(f"eval.{name}.neck_feat", neck_feat, _resolve(ref, f"{name}.neck_feat"), "eval"))
        # fast-reid's compute_cosine_distance in the replay's dtype (the evaluator itself computes in float32)
        normed = normalize_features(feat)
        rows.append(cmp.tensor("eval.cosine_dist", 1 - torch.mm(normed, normed.t()), ref["cosine_dist"], "eval"))
    return rows


def _enter_regime(model: nn.Module, cfg, regime: str) -> List[str]:
    """Training mode; for the freeze phase, iteration 0 of the trainer's LayerFreeze hook on top.

    Returns:
        The children left in eval mode.
    """
    model.train()
    if regime == "train_freeze_phase":
        hook = LayerFreeze(cfg)
        hook.trainer = SimpleNamespace(model=model, iter=0)
        hook.before_step()
    return [n for n, c in model.named_children() if not c.training]


def _train_rows(model: nn.Module, cfg, case: dict, regime: str, images: torch.Tensor, to_peer: Dict[str, str],
                state: Dict[str, torch.Tensor], cmp: _Comparer) -> List[ParityRow]:
    """Forward, losses, backward of one training regime ("train" or "train_freeze_phase"), from ``state``."""
    ref = case[regime]
    model.zero_grad(set_to_none=True)
    frozen = _enter_regime(model, cfg, regime)
    rows = [cmp.exact(f"{regime}.frozen_by_layerfreeze", frozen, list(ref.get("frozen_by_layerfreeze", [])))]
    batch = {"images": images, "targets": case["inputs"]["targets"], "camids": case["inputs"]["camids"]}
    outputs, targets = model.training_outputs(batch)
    flags = {n: c.training for n, c in model.named_children()}
    ref_flags = dict(ref["outputs"]["module_training_flags"])
    rows.append(cmp.exact(f"{regime}.outputs.module_training_flags", {n: flags.get(n) for n in ref_flags}, ref_flags))
    per_head = outputs if "b1" in outputs else {"heads": outputs}
    for name, out in per_head.items():
        key = name if name == "heads" else f"{name}_head"
        ours = {"pool_feat": out["pool_feat"], "neck_feat": out["neck_feat"], "cls_outputs": out["cls_outputs"][0],
                "pred_class_logits": out["pred_class_logits"], "features": out["triplet_features"][0]}
        for field, value in ours.items():
            full = f"{key}.{field}"
            if full in ref["outputs"]:
                rows.append(cmp.tensor(f"{regime}.outputs.{full}", value, _resolve(ref["outputs"], full), "outputs"))
            if f"{full}_digest" in ref["outputs"]:
                rows.append(cmp.tensor(f"{regime}.outputs.{full}_digest", _digest(value),
                                       ref["outputs"][f"{full}_digest"], "outputs"))
    losses = model.losses_of(outputs, targets)
    rows.append(cmp.exact(f"{regime}.losses.names", sorted(losses), sorted(ref["losses"])))
    for name, value in ref["losses"].items():
        rows.append(cmp.tensor(f"{regime}.losses.{name}", losses.get(name), value, "losses"))
    total = sum(losses[name] for name in ref["losses"] if name in losses)
    rows.append(cmp.tensor(f"{regime}.loss_total", total, ref["loss_total"], "losses"))
    buffers = {to_peer.get(n, n): b for n, b in model.named_buffers()}
    for name, value in ref["bn_buffers_after_forward"].items():
        rows.append(cmp.tensor(f"{regime}.bn_buffers_after_forward.{name}", buffers.get(name), value, "bn"))
    if "bn_buffers_unchanged_by_forward" in ref:  # the frozen children's statistics must not move
        before = {to_peer.get(n, n): v for n, v in state.items()}
        moved = sorted(n for n in ref["bn_buffers_unchanged_by_forward"]
                       if n not in buffers or not torch.equal(buffers[n], before[n]))
        rows.append(cmp.exact(f"{regime}.bn_buffers_unchanged_by_forward (moved here)", moved, []))
    if cmp.dtype != torch.float64:
        return rows  # float32 gradients are not reproducible by the peer itself
    total.backward()
    grads = {to_peer.get(n, n): p.grad for n, p in model.named_parameters() if p.grad is not None}
    if regime == "train":  # the freeze phase stores only what its optimizer updates
        rows.append(cmp.exact(f"{regime}.parameters_with_gradient", sorted(grads), sorted(ref["grad_digest"])))
    for name, value in ref["grads"].items():
        rows.append(cmp.tensor(f"{regime}.grads.{name}", grads.get(name), value, "outputs"))
    for name, value in ref["grad_digest"].items():
        g = grads.get(name)
        rows.append(cmp.tensor(f"{regime}.grad_digest.{name}", None if g is None else _digest(g), value, "outputs"))
    for name, sample in ref["grad_samples"].items():
        g = grads.get(name)
        ours = None if g is None else g.flatten()[::int(sample["stride"])]
        rows.append(cmp.tensor(f"{regime}.grad_samples.{name}", ours, sample["values"], "outputs"))
    return rows


def collapse_rows(rows: List[ParityRow]) -> List[ParityRow]:
    """One row per family of many tensors (``<regime>.grads.*``, ...): the worst error, the worst member named."""
    out: List[ParityRow] = []
    families: Dict[str, List[ParityRow]] = {}
    for row in rows:
        family = next((row.name[:row.name.index(f)] + f + "*" for f in FAMILIES if f".{f}" in f".{row.name}"), None)
        if family is None:
            out.append(row)
            continue
        if family not in families:
            families[family] = []
            out.append(ParityRow(family, 0.0, "", True, ""))  # placeholder, filled below
        families[family].append(row)
    result = []
    for row in out:
        members = families.get(row.name)
        if members is None:
            result.append(row)
            continue
        errors = [m.max_abs_err if not math.isnan(m.max_abs_err) else math.inf for m in members]
        worst = members[int(np.argmax(errors))]
        failed = [m for m in members if not m.passed]
        note = f"{len(members)} tensors, worst {worst.name[len(row.name) - 1:]}"
        if failed:
            note = f"{len(failed)}/{len(members)} fail, e.g. {failed[0].name}: {failed[0].note}"
        result.append(ParityRow(row.name, max(errors), worst.tolerance, not failed, note))
    return result


def model_rows(case: dict, case_path: str, dtype: torch.dtype = torch.float64,
               solver_rows: bool = True) -> List[ParityRow]:
    """Every row of one case (see the module docstring), uncollapsed.

    Args:
        case: the loaded case file.
        case_path: its path (``peer_weights.py`` is looked up beside it).
        dtype: the case's dtype (float64 files: every output; float32: forward, losses, BN buffers).
        solver_rows: add :mod:`.fastreid_solver_replay`'s rows (optimizer, schedules, one step).
    """
    torch.manual_seed(0)
    cmp = _Comparer(dtype, _float64_twin(case_path) if dtype != torch.float64 else None)
    cfg = replay_cfg(case)
    model, state, to_peer, weights_row = build_peer_model(case, load_peer_weights_module(case_path), dtype)
    peer_name: Callable[[str], str] = lambda n: to_peer.get(n, n)  # noqa: E731
    images = model_images(case, dtype)
    rows = [weights_row] + _eval_rows(model, case, images, cmp)
    for regime in ("train", "train_freeze_phase"):
        if regime not in case:
            continue
        model.load_state_dict(state, strict=True)  # each regime starts from the case's weights and buffers
        rows += _train_rows(model, cfg, case, regime, images, to_peer, state, cmp)
        if solver_rows and dtype == torch.float64:
            rows += solver_replay.step_rows(case, model, peer_name, regime=regime)
    if solver_rows and dtype == torch.float64:
        rows += solver_replay.optimizer_rows(case, model, peer_name)
        for key in ("schedule", "schedule_small_epochs"):
            if key in case:
                rows += solver_replay.schedule_rows(case, model, key)
    return rows


def run_peer_case(case: dict, case_path: str, device: str = "cpu", dtype: torch.dtype = torch.float64
                  ) -> List[ParityRow]:
    """The rows ``tools/check_parity.py`` prints for a fast-reid case (families collapsed).

    Raises:
        ValueError: ``device`` is not the CPU (the cases were made on CPU; the replay is CPU-only).
    """
    if device != "cpu":
        raise ValueError(f"the fast-reid replay runs on the CPU (the peer cases were made there), not {device!r}")
    made_in = str(case["meta"].get("dtype", "float32"))
    if made_in != str(dtype).replace("torch.", ""):
        raise ValueError(f"the case was made in {made_in}: replay it with --dtype {made_in}")
    return collapse_rows(model_rows(case, case_path, dtype))
