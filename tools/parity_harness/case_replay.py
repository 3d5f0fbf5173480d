"""Parity with the reference CLIP-ReID implementation (Syliz517/CLIP-ReID, commit eb1898b).

Development tooling (behind ``tools/check_parity.py`` and the parity tests), outside the
installed package: it replays the reference's steps through the CLIP-ReID plugin's models.

A *case file* (format: ``../shared/reference/README.md``) holds what the reference code computed
for one configuration: ``meta`` (its config values in the reference's own key names, class /
camera / view counts, the CLIP weights file it used), its full ``state_dict``, the ``inputs``,
every intermediate ``outputs`` tensor of one evaluation, one stage-1 step and one stage-2
step, and its LR ``schedules`` and optimizer groups.

This module rebuilds the same model from this toolkit's config (:func:`reference_to_cfg`
translates the reference keys), loads the reference weights through the plugin's
``convert_reference_state_dict``, recomputes every output with the code that training and
evaluation really use (the meta-architecture's ``forward``, the registered losses,
``build_optimizer``, ``build_lr_scheduler`` stepped like the LRScheduler hook, the stage-1
hook's optimizer and schedule) and compares (:func:`run_case`).

Each step starts from the reference's own inputs to that step (stage 1 from the reference's
cached image features, stage 2 from the reference's frozen text features), so a difference is
reported where it arises instead of being carried into every later output.

Two precisions (the ``tolerance`` column of every row says which bound applies):

* **float64** (``dtype=torch.float64``, for the cases the reference computed in float64): the
  model and inputs are made ``.double()`` and nothing is cast down on the way; every tensor
  row must agree to ``1e-9 * max(1, max|ref|)``. This is the exact-parity check: the measured
  agreement is ~1e-12, while real divergence shows up orders of magnitude above.
* **float32**: float32 results depend on the CPU's kernels (summation order), so a float32
  comparison with tensors made on another machine is bounded by the reference's *own* float32
  error where it is known: ``max(fixed bound, 2 * max|ref32 - ref64|)`` per output, ``ref64``
  being the same output in the float64 case file (``float64/<name>`` next to the case). Without
  it the fixed bounds apply: features, text features, prompts, logits, losses, BN statistics
  ``1e-5 * max(1, max|ref|)``; gradients ``1e-5 + 5e-5 * max|ref|``.

In both: learning rates relative error ``<= 1e-12``; integers and names (token ids, BN batch
counters, optimizer group names) exact.
"""

import contextlib
import copy
import math
import os
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from clipreid_plugin.config import CfgNode, get_cfg
from clipreid_plugin.plugins.clipreid import reference_checkpoint
from clipreid_plugin.plugins.clipreid.stage1 import build_stage1_optimizer, build_stage1_scheduler

__all__ = [
    "FEATURE_ATOL", "GRAD_ATOL", "GRAD_RTOL", "LR_RTOL", "FLOAT64_RTOL", "ROUNDING_FACTOR", "CaseFormatError",
    "ParityRow", "Tolerance", "reference_to_cfg", "load_case", "resolve_clip_weights", "float64_case_path",
    "parity_cfg", "build_reference_model", "flatten_outputs", "replay_case", "compare_case", "run_case",
]

FEATURE_ATOL = 1e-5
GRAD_ATOL = 1e-5
GRAD_RTOL = 5e-5
LR_RTOL = 1e-12
FLOAT64_RTOL = 1e-9
# float32 bound = ROUNDING_FACTOR x the reference's own float32 error (ours and the reference's
# float32 results may each be off by about that much, in opposite directions)
ROUNDING_FACTOR = 2.0

CASE_KEYS = ("meta", "state_dict", "inputs", "outputs", "schedules")
META_KEYS = ("config", "num_classes", "camera_num", "view_num", "tiny_clip_file")
INPUT_KEYS = ("images", "labels", "cam_ids", "view_ids")

# Values of the reference's config/defaults.py (CLIPREID_SPEC.md 1.2) for keys a case's
# meta.config leaves out; the translation then does what the reference would have done.
_REFERENCE_DEFAULTS: Dict[str, Any] = {
    "MODEL.NAME": "resnet50", "MODEL.STRIDE_SIZE": [16, 16], "MODEL.SIE_CAMERA": False,
    "MODEL.SIE_VIEW": False, "MODEL.SIE_COE": 3.0, "MODEL.ID_LOSS_WEIGHT": 1.0,
    "MODEL.TRIPLET_LOSS_WEIGHT": 1.0, "MODEL.I2T_LOSS_WEIGHT": 1.0, "MODEL.METRIC_LOSS_TYPE": "triplet",
    "MODEL.IF_LABELSMOOTH": "on", "MODEL.NO_MARGIN": False,
    "INPUT.SIZE_TRAIN": [384, 128], "INPUT.SIZE_TEST": [384, 128], "INPUT.PROB": 0.5, "INPUT.RE_PROB": 0.5,
    "INPUT.PIXEL_MEAN": [0.485, 0.456, 0.406], "INPUT.PIXEL_STD": [0.229, 0.224, 0.225], "INPUT.PADDING": 10,
    "DATASETS.NAMES": "market1501", "DATASETS.ROOT_DIR": "../data",
    "DATALOADER.NUM_WORKERS": 8, "DATALOADER.SAMPLER": "softmax", "DATALOADER.NUM_INSTANCE": 16,
    "SOLVER.SEED": 1234, "SOLVER.MARGIN": 0.3,
    "SOLVER.STAGE1.IMS_PER_BATCH": 64, "SOLVER.STAGE1.OPTIMIZER_NAME": "Adam", "SOLVER.STAGE1.MAX_EPOCHS": 100,
    "SOLVER.STAGE1.BASE_LR": 3e-4, "SOLVER.STAGE1.WEIGHT_DECAY": 5e-4, "SOLVER.STAGE1.WARMUP_EPOCHS": 5,
    "SOLVER.STAGE1.WARMUP_LR_INIT": 0.01, "SOLVER.STAGE1.LR_MIN": 1.6e-5, "SOLVER.STAGE1.CHECKPOINT_PERIOD": 10,
    "TEST.IMS_PER_BATCH": 128, "TEST.NECK_FEAT": "after", "OUTPUT_DIR": "",
}
# Stage-2 solver (SOLVER.STAGE2.* of the CLIP-ReID scripts, flat SOLVER.* of the baselines' train.py):
# the same defaults in both files.
_SOLVER_DEFAULTS: Dict[str, Any] = {
    "IMS_PER_BATCH": 64, "OPTIMIZER_NAME": "Adam", "MAX_EPOCHS": 100, "BASE_LR": 3e-4, "LARGE_FC_LR": False,
    "BIAS_LR_FACTOR": 1, "MOMENTUM": 0.9, "WEIGHT_DECAY": 5e-4, "WEIGHT_DECAY_BIAS": 5e-4, "GAMMA": 0.1,
    "STEPS": (40, 70), "WARMUP_FACTOR": 0.01, "WARMUP_ITERS": 500, "WARMUP_METHOD": "linear",
    "CHECKPOINT_PERIOD": 10, "LOG_PERIOD": 100, "EVAL_PERIOD": 10,
}
# Reference MODEL.NAME -> open_clip model name (the reference handles only these two).
_MODEL_NAMES = {"ViT-B-16": "ViT-B-16", "RN50": "RN50"}
# DATASETS.NAMES values for which the reference builds the vehicle prompt (exact string compare).
_VEHICLE_DATASETS = ("VehicleID", "veri")
# Model keys a reference checkpoint cannot hold: CLIPReID's stage-2 text features (computed at
# the end of stage 1, from the checkpoint's prompts).
_NOT_IN_REFERENCE = {"text_head.text_features", "text_head.text_features_ready"}


class CaseFormatError(ValueError):
    """A case file that is missing, unreadable or lacks the keys of the case format."""


class Tolerance(NamedTuple):
    """How one replay is compared with the reference.

    Attributes:
        dtype: torch.float32 or torch.float64 (the precision of the replay and of the case).
        rounding: ``{output name: max|ref32 - ref64|}`` (float32 replays with a known float64
            reference), or None for the fixed float32 bounds.
    """

    dtype: torch.dtype = torch.float32
    rounding: Optional[Dict[str, float]] = None


class ParityRow(NamedTuple):
    """One compared quantity.

    Attributes:
        name: the output's name in the case file (nested entries as ``parent.child``, schedule
            entries as ``schedules.<name>``).
        max_abs_err: the measured error in the unit the tolerance names (absolute, relative for
            LR schedules, a count of mismatching entries for names); NaN when not computed.
        tolerance: the bound, e.g. ``"1e-05 abs"``, ``"1.2e-03 abs (1e-5 + 5e-5 max|ref|)"``,
            ``"1e-12 rel"``, ``"exact"``.
        passed: whether the error is within the tolerance.
        note: why a row failed or was not checked ("" when it passed).
    """

    name: str
    max_abs_err: float
    tolerance: str
    passed: bool
    note: str = ""


# ---------------------------------------------------------------------------------------------
# Config translation
# ---------------------------------------------------------------------------------------------
def _solver_prefix(ref: Dict[str, Any]) -> Tuple[str, bool]:
    """("SOLVER.STAGE2." , True) for the CLIP-ReID scripts, ("SOLVER.", False) for train.py baselines."""
    if any(k.startswith(("SOLVER.STAGE1.", "SOLVER.STAGE2.")) for k in ref):
        return "SOLVER.STAGE2.", True
    if "SOLVER.BASE_LR" in ref:
        return "SOLVER.", False
    return "SOLVER.STAGE2.", True  # nothing given: the CLIP-ReID defaults (config/defaults.py)


def reference_to_cfg(meta: Dict[str, Any], clip_weights: str = "") -> CfgNode:
    """This toolkit's config for a reference CLIP-ReID (or CLIP-baseline) configuration.

    Translates the reference keys of ``meta["config"]`` (its own names, e.g. ``MODEL.NAME``,
    ``SOLVER.STAGE2.WARMUP_ITERS``; keys left out take the reference defaults of
    CLIPREID_SPEC.md 1.2) plus ``meta["num_classes"]``, ``camera_num`` and ``view_num``:

    * model: ``MODEL.NAME`` -> ``CLIPREID.BACKBONE.MODEL_NAME``; ``STRIDE_SIZE``, ``SIE_*``;
      ``TEST.NECK_FEAT`` ('after' or anything else = 'before', as the reference branches);
      ``MODEL.META_ARCHITECTURE`` CLIPReID (``SOLVER.STAGE1/2`` keys) or CLIPBaseline (flat
      ``SOLVER.BASE_LR`` of the baselines' train.py);
    * losses: ``ID/TRIPLET/I2T_LOSS_WEIGHT`` -> ``MODEL.LOSSES.{CE,TRI,I2T}.SCALE``,
      ``IF_LABELSMOOTH`` 'on' -> epsilon 0.1 for the ID and image-to-text CE, ``NO_MARGIN`` ->
      soft-margin triplet, ``SOLVER.MARGIN`` -> triplet margin;
    * prompt: ``DATASETS.NAMES`` 'VehicleID' or 'veri' -> class word "vehicle", anything else
      "person" (the reference's exact string compare);
    * stage 2 (``SOLVER.STAGE2.*`` / flat ``SOLVER.*``): optimizer, ``BASE_LR``,
      ``BIAS_LR_FACTOR``, ``WEIGHT_DECAY(_BIAS)``, ``MOMENTUM``, ``MAX_EPOCHS``, ``STEPS``,
      ``GAMMA``, ``WARMUP_FACTOR``, ``WARMUP_ITERS`` (epochs in the reference),
      ``WARMUP_METHOD``, checkpoint / eval / log periods; per-epoch WarmupMultiStepLR;
    * stage 1 (``SOLVER.STAGE1.*``) -> ``CLIPREID.STAGE1.*``;
    * data: ``INPUT.*`` sizes, normalisation, flip / erasing probabilities, padding;
      ``DATALOADER.*``; ``DATASETS.NAMES`` / ``ROOT_DIR``; ``TEST.IMS_PER_BATCH``,
      ``TEST.FEAT_NORM`` (always on: the reference passes the string, and any non-empty
      string is true); ``SOLVER.SEED``; fp16 autocast + GradScaler as the reference trains.

    Args:
        meta: a case's ``meta`` dict (or any dict with ``config`` and the three counts).
        clip_weights: a local CLIP weights file (OpenAI or open_clip format) to build the
            towers from; "" builds them randomly (every weight then comes from the reference
            checkpoint, loaded through ``MODEL.WEIGHTS``).

    Returns:
        A config (not frozen).

    Raises:
        ValueError: a reference value this toolkit (or the reference itself) cannot run, named
            with its key.
    """
    ref = dict(meta["config"])
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    solver, clipreid = _solver_prefix(ref)

    def get(key: str) -> Any:
        if key in ref:
            return ref[key]
        if key in _REFERENCE_DEFAULTS:
            return _REFERENCE_DEFAULTS[key]
        return _SOLVER_DEFAULTS[key[len(solver):]]  # SOLVER.STAGE2.* or flat SOLVER.* stage-2 keys

    name = get("MODEL.NAME")
    if name not in _MODEL_NAMES:
        raise ValueError(f"meta.config MODEL.NAME is {name!r}; the reference builds only "
                         f"{' and '.join(repr(n) for n in _MODEL_NAMES)}.")
    if get("MODEL.METRIC_LOSS_TYPE") != "triplet" or get("DATALOADER.SAMPLER") != "softmax_triplet":
        raise ValueError(
            f"meta.config has MODEL.METRIC_LOSS_TYPE {get('MODEL.METRIC_LOSS_TYPE')!r} and DATALOADER.SAMPLER "
            f"{get('DATALOADER.SAMPLER')!r}: the reference trains only with 'triplet' and 'softmax_triplet' "
            f"(other values crash its loss function, upstream issue #27).")
    if get(solver + "LARGE_FC_LR"):
        raise ValueError(f"meta.config {solver}LARGE_FC_LR is True, which crashes the reference "
                         f"(it reads a non-existent SOLVER.BASE_LR); set it to False.")

    m = cfg.MODEL
    m.META_ARCHITECTURE = "CLIPReID" if clipreid else "CLIPBaseline"
    m.BACKBONE.NAME = "build_clip_backbone"
    m.BACKBONE.PRETRAIN = bool(clip_weights)
    m.BACKBONE.PRETRAIN_PATH = clip_weights
    c = cfg.CLIPREID.BACKBONE
    c.MODEL_NAME = _MODEL_NAMES[name]
    c.STRIDE_SIZE = [int(s) for s in get("MODEL.STRIDE_SIZE")]
    c.SIE_CAMERA = bool(get("MODEL.SIE_CAMERA"))
    c.SIE_VIEW = bool(get("MODEL.SIE_VIEW"))
    c.SIE_COE = float(get("MODEL.SIE_COE"))
    c.NUM_CAMERAS = int(meta["camera_num"])
    c.NUM_VIEWS = int(meta["view_num"])
    c.QUICK_GELU = "auto"  # OpenAI weights -> QuickGELU, as the reference's CLIP
    m.HEADS.NUM_CLASSES = int(meta["num_classes"])
    cfg.CLIPREID.NECK_FEAT = "after" if get("TEST.NECK_FEAT") == "after" else "before"
    m.HEADS.CLS_INIT_STD = 0.001  # fixed in the reference's model code

    smooth = 0.1 if get("MODEL.IF_LABELSMOOTH") == "on" else 0.0
    losses = m.LOSSES
    losses.NAMES = ("CrossEntropyLoss", "TripletLoss") + (("ImageTextCrossEntropyLoss",) if clipreid else ())
    losses.CE.EPSILON = smooth
    losses.CE.SCALE = float(get("MODEL.ID_LOSS_WEIGHT"))
    losses.TRI.MARGIN = float(get("SOLVER.MARGIN"))
    losses.TRI.SOFT_MARGIN = bool(get("MODEL.NO_MARGIN"))
    losses.TRI.NORM_FEAT = False
    losses.TRI.SCALE = float(get("MODEL.TRIPLET_LOSS_WEIGHT"))
    cfg.CLIPREID.LOSSES.I2T.EPSILON = smooth
    cfg.CLIPREID.LOSSES.I2T.SCALE = float(get("MODEL.I2T_LOSS_WEIGHT"))

    dataset = str(get("DATASETS.NAMES"))
    cfg.CLIPREID.PROMPT.TEMPLATE = "auto"
    cfg.CLIPREID.PROMPT.CLASS_WORD = "vehicle" if dataset in _VEHICLE_DATASETS else "person"
    cfg.DATASETS.NAMES = (dataset,)
    cfg.DATASETS.TESTS = (dataset,)
    cfg.DATASETS.ROOT_DIR = str(get("DATASETS.ROOT_DIR"))

    i = cfg.INPUT
    i.SIZE_TRAIN = [int(s) for s in get("INPUT.SIZE_TRAIN")]
    i.SIZE_TEST = [int(s) for s in get("INPUT.SIZE_TEST")]
    i.PIXEL_MEAN = [float(v) for v in get("INPUT.PIXEL_MEAN")]
    i.PIXEL_STD = [float(v) for v in get("INPUT.PIXEL_STD")]
    i.FLIP.PROB = float(get("INPUT.PROB"))
    i.FLIP.ENABLED = i.FLIP.PROB > 0
    i.REA.PROB = float(get("INPUT.RE_PROB"))
    i.REA.ENABLED = i.REA.PROB > 0
    i.PADDING.SIZE = int(get("INPUT.PADDING"))
    i.PADDING.ENABLED = i.PADDING.SIZE > 0

    cfg.DATALOADER.SAMPLER = "PKSampler"  # 'softmax_triplet' = P identities x K instances
    cfg.DATALOADER.NUM_INSTANCE = int(get("DATALOADER.NUM_INSTANCE"))
    cfg.DATALOADER.NUM_WORKERS = int(get("DATALOADER.NUM_WORKERS"))

    s = cfg.SOLVER
    s.SEED = int(get("SOLVER.SEED"))
    s.OPTIMIZER_NAME = str(get(solver + "OPTIMIZER_NAME"))
    s.BASE_LR = float(get(solver + "BASE_LR"))
    s.BIAS_LR_FACTOR = float(get(solver + "BIAS_LR_FACTOR"))
    s.MOMENTUM = float(get(solver + "MOMENTUM"))
    s.WEIGHT_DECAY = float(get(solver + "WEIGHT_DECAY"))
    s.WEIGHT_DECAY_BIAS = float(get(solver + "WEIGHT_DECAY_BIAS"))
    s.IMS_PER_BATCH = int(get(solver + "IMS_PER_BATCH"))
    s.MAX_EPOCHS = int(get(solver + "MAX_EPOCHS"))
    s.SCHED.NAME = "WarmupMultiStepLR"
    s.SCHED.UNIT = "epoch"  # the reference steps its scheduler once before every epoch
    s.STEPS_EPOCHS = tuple(int(e) for e in get(solver + "STEPS"))
    s.GAMMA = float(get(solver + "GAMMA"))
    s.WARMUP_FACTOR = float(get(solver + "WARMUP_FACTOR"))
    s.WARMUP_EPOCHS = int(get(solver + "WARMUP_ITERS"))  # counted in epochs by the reference (spec 4.3)
    s.WARMUP_METHOD = str(get(solver + "WARMUP_METHOD"))
    s.CHECKPOINT_PERIOD = int(get(solver + "CHECKPOINT_PERIOD"))
    s.LOG_PERIOD_ITERS = int(get(solver + "LOG_PERIOD"))
    s.AMP.ENABLED = True  # the reference trains under fp16 autocast with a GradScaler (spec 4.5)
    s.AMP.DTYPE = "float16"

    s1 = cfg.CLIPREID.STAGE1
    s1.IMS_PER_BATCH = int(get("SOLVER.STAGE1.IMS_PER_BATCH"))
    s1.OPTIMIZER = str(get("SOLVER.STAGE1.OPTIMIZER_NAME"))
    s1.BASE_LR = float(get("SOLVER.STAGE1.BASE_LR"))
    s1.WEIGHT_DECAY = float(get("SOLVER.STAGE1.WEIGHT_DECAY"))
    s1.MAX_EPOCHS = int(get("SOLVER.STAGE1.MAX_EPOCHS"))
    s1.WARMUP_EPOCHS = int(get("SOLVER.STAGE1.WARMUP_EPOCHS"))
    s1.WARMUP_LR_INIT = float(get("SOLVER.STAGE1.WARMUP_LR_INIT"))
    s1.LR_MIN = float(get("SOLVER.STAGE1.LR_MIN"))
    # The reference saves when epoch % period == 0; the final stage-1 checkpoint is always written here.
    period = int(get("SOLVER.STAGE1.CHECKPOINT_PERIOD"))
    s1.CHECKPOINT_PERIOD = period if 0 < period < s1.MAX_EPOCHS else 0

    cfg.TEST.IMS_PER_BATCH = int(get("TEST.IMS_PER_BATCH"))
    cfg.TEST.EVAL_PERIOD = int(get(solver + "EVAL_PERIOD"))
    cfg.TEST.FEAT_NORM = True
    cfg.TEST.METRIC = "euclidean"
    cfg.TEST.RERANK.ENABLED = False  # TEST.RE_RANKING is never read by the reference
    if get("OUTPUT_DIR"):
        cfg.OUTPUT_DIR = str(get("OUTPUT_DIR"))
    return cfg


# ---------------------------------------------------------------------------------------------
# Case files and the model
# ---------------------------------------------------------------------------------------------
def _expect(container: Any, keys: Sequence[str], where: str, path: str) -> None:
    missing = [k for k in keys if not isinstance(container, dict) or k not in container]
    if missing:
        raise CaseFormatError(f"{path}: {where} lacks {', '.join(repr(k) for k in missing)}; a case file holds "
                              f"{', '.join(CASE_KEYS)} with meta keys {', '.join(META_KEYS)} and inputs "
                              f"{', '.join(INPUT_KEYS)} (see ../shared/reference/README.md).")


def load_case(path: str) -> Dict[str, Any]:
    """Read and check a case file.

    Args:
        path: the ``.pt`` file (loaded with ``weights_only=True``).

    Returns:
        The case dict.

    Raises:
        CaseFormatError: missing file, not a torch file, or keys of the format missing (the
            message lists the expected keys).
    """
    if not os.path.isfile(path):
        raise CaseFormatError(f"{path}: no such case file.")
    try:
        case = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of every kind: the file is not a case
        raise CaseFormatError(f"{path}: not a readable torch file ({type(e).__name__}: {e}).") from None
    _expect(case, CASE_KEYS, "the file", path)
    _expect(case["meta"], META_KEYS, "meta", path)
    _expect(case["inputs"], INPUT_KEYS, "inputs", path)
    if not isinstance(case["meta"]["config"], dict):
        raise CaseFormatError(f"{path}: meta.config must be a dict of reference config keys to values.")
    return case


def resolve_clip_weights(meta: Dict[str, Any], clip_dir: str) -> str:
    """The CLIP weights file of a case: ``meta.tiny_clip_file`` inside ``clip_dir``.

    Args:
        meta: the case's meta dict.
        clip_dir: the folder holding the weights (normally the case file's folder).

    Returns:
        The path.

    Raises:
        CaseFormatError: the file does not exist.
    """
    path = os.path.join(clip_dir, meta["tiny_clip_file"])
    if not os.path.isfile(path):
        raise CaseFormatError(f"The case's CLIP weights meta.tiny_clip_file={meta['tiny_clip_file']!r} are not in "
                              f"{clip_dir} (put them next to the case file or pass their folder, --tiny-clip-dir).")
    return path


def parity_cfg(meta: Dict[str, Any], clip_weights: str) -> CfgNode:
    """:func:`reference_to_cfg` for replaying a case with its CLIP weights file.

    The architecture is read from the weights file's shapes (``CLIPREID.BACKBONE.MODEL_NAME``
    ""), because the shared cases use tiny CLIP models that have no open_clip name.

    Args:
        meta: the case's meta dict.
        clip_weights: the case's CLIP weights (OpenAI format).

    Returns:
        The config.
    """
    cfg = reference_to_cfg(meta, clip_weights)
    cfg.CLIPREID.BACKBONE.MODEL_NAME = ""
    return cfg


def build_reference_model(cfg: CfgNode, state_dict: Dict[str, torch.Tensor]) -> nn.Module:
    """The configured meta-architecture with a reference state dict loaded (on the CPU).

    Args:
        cfg: the config (e.g. from :func:`parity_cfg`).
        state_dict: the reference model's state dict.

    Returns:
        The model.

    Raises:
        ValueError: a reference key has no place in the model, or a model tensor is not in the
            reference state dict (names both, so the config difference can be found).
    """
    from clipreid_plugin.modeling import META_ARCH_REGISTRY

    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    sd, unmatched = reference_checkpoint.convert_reference_state_dict(state_dict, model)
    if unmatched:
        raise ValueError(f"Reference keys without a place in {type(model).__name__}: {unmatched[:8]} "
                         f"(SIE, text side or architecture differ from the translated config).")
    missing = set(model.load_state_dict(sd, strict=False).missing_keys) - _NOT_IN_REFERENCE
    if missing:
        raise ValueError(f"{type(model).__name__} tensors missing from the reference state dict: "
                         f"{sorted(missing)[:8]}.")
    return model


# ---------------------------------------------------------------------------------------------
# Replaying the reference's steps
# ---------------------------------------------------------------------------------------------
def flatten_outputs(outputs: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested outputs as one level: dict entries ``parent.child``, tuple items ``parent.<i>``.

    Args:
        outputs: the case's ``outputs`` (or any nested dict).
        prefix: prepended to every name.

    Returns:
        {name: leaf value}.
    """
    flat: Dict[str, Any] = {}
    for key, value in outputs.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_outputs(value, name + "."))
        elif isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
            flat.update(flatten_outputs({str(j): v for j, v in enumerate(value)}, name + "."))
        else:
            flat[name] = value
    return flat


@contextlib.contextmanager
def _strict_fp32(device: torch.device) -> Iterator[None]:
    """No TF32 on CUDA while replaying (cuDNN convolutions use it by default: 1e-3 errors)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _unit_scale(loss: nn.Module) -> nn.Module:
    """A copy of a registered loss with weight 1: the reference stores its loss terms unweighted."""
    unit = copy.copy(loss)
    unit.scale = 1.0
    return unit


def _loss_module(model: nn.Module, type_name: str) -> Optional[nn.Module]:
    return next((m for m in model.losses if type(m).__name__ == type_name), None)


def _replay_eval(model: nn.Module, inputs: Dict[str, torch.Tensor], batch: Dict[str, Any],
                 ours: Dict[str, Any]) -> None:
    """Eval-mode features, encoder outputs and the stage-1 image features (before any train forward)."""
    model.eval()
    neck_feat = model.neck_feat
    with torch.no_grad():
        for setting in ("before", "after"):
            model.neck_feat = setting
            ours[f"eval_feat_neck_{setting}"] = model(batch)
        model.neck_feat = neck_feat
        enc = model.backbone
        if hasattr(enc, "forward_tokens"):
            cams = batch["camids"] if enc.uses_camids else None
            views = batch["viewids"] if enc.uses_viewids else None
            images = batch["images"].to(model.device)
            tokens = list(enc.forward_tokens(images, cams, views))
            if not enc.is_vit:
                tokens[2] = tokens[2].transpose(0, 1)  # the reference's attention pool is sequence-first
            for j, t in enumerate(tokens):
                ours[f"eval_image_encoder_outputs.{j}"] = t
    if hasattr(model, "encode_image_for_stage1"):
        ours["get_image_features"] = model.encode_image_for_stage1(batch["images"])


def _replay_text_and_stage1(model: nn.Module, cfg: CfgNode, case: Dict[str, Any], ours: Dict[str, Any]) -> None:
    """Text side in eval mode, then one stage-1 step on the reference's cached image features."""
    labels = case["inputs"]["labels"]
    head = model.text_head
    with torch.no_grad():
        ours["tokenized_prompt"] = head.prompt_learner.tokenized_prompts
        ours["prompt_embeddings"] = head.prompt_learner(labels.to(model.device))
        ours["get_text_features"] = model.text_features(labels)
        ours["get_text_features_all_classes"] = model.compute_all_text_features(cfg.SOLVER.IMS_PER_BATCH)
    cached = case["outputs"].get("get_image_features")
    if cached is None:
        return
    model.train()  # as the reference's stage-1 loop
    for p in model.stage1_parameters():
        p.requires_grad_(True)
    ours["stage1_text_features_train_mode"] = model.text_features(labels).detach()
    losses = model.stage1_losses(cached.to(head.text_features.dtype), labels)
    total = sum(losses.values())
    total.backward()
    ours["stage1_loss_i2t"] = losses["loss_supcon_i2t"]
    ours["stage1_loss_t2i"] = losses["loss_supcon_t2i"]
    ours["stage1_loss"] = total
    ours["stage1_grad_prompt_learner.cls_ctx"] = head.prompt_learner.cls_ctx.grad.clone()
    for p in model.stage1_parameters():
        p.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    ours["stage2_text_features_all_classes"] = model.compute_all_text_features(cfg.SOLVER.IMS_PER_BATCH)


def _replay_stage2(model: nn.Module, case: Dict[str, Any], batch: Dict[str, Any], ours: Dict[str, Any]) -> None:
    """One training forward/backward of the model (stage 2), capturing what the losses see."""
    out = case["outputs"]
    labels = batch["targets"]
    text = getattr(model, "text_head", None)
    if text is not None:
        feats = out.get("stage2_text_features_all_classes")
        if feats is None:  # a case without them: the text features stage 1 ends with
            feats = ours.get("stage2_text_features_all_classes")
        if feats is None:
            feats = model.compute_all_text_features()
        model.set_text_features(feats.to(text.text_features.dtype))
    model.train()
    seen: Dict[str, Any] = {}
    hook = model.losses[0].register_forward_pre_hook(lambda m, args: seen.update(args[0]))
    try:
        losses = model(batch)
    finally:
        hook.remove()
    total = sum(losses.values())
    total.backward()

    for j, name in enumerate(("train_cls_score", "train_cls_score_proj")):
        ours[name] = seen["cls_outputs"][j]
    ours["train_img_feature_last"] = seen["feat_last"]
    ours["train_img_feature"] = seen["feat"]
    ours["train_img_feature_proj"] = seen["feat_proj"]
    ours["train_image_features_returned"] = seen["feat_proj"]  # the reference's third return value
    state = model.state_dict()
    for ref_key in out.get("train_bn_buffers_after_forward", {}):
        target = reference_checkpoint.to_model_key(model, ref_key)
        if target in state:
            ours[f"train_bn_buffers_after_forward.{ref_key}"] = state[target]
    y = labels.to(model.device)
    with torch.no_grad():
        ce = _loss_module(model, "CrossEntropyLoss")
        if ce is not None:
            ours["stage2_id_loss_terms"] = torch.stack(
                [_unit_scale(ce)({"cls_outputs": [z]}, y)["loss_cls"] for z in seen["cls_outputs"]])
        tri = _loss_module(model, "TripletLoss")
        if tri is not None:
            ours["stage2_triplet_loss_terms"] = torch.stack(
                [_unit_scale(tri)({"triplet_features": [f]}, y)["loss_triplet"] for f in seen["triplet_features"]])
        i2t = _loss_module(model, "ImageTextCrossEntropyLoss")
        if i2t is not None and "i2t_logits" in seen:
            ours["stage2_i2t_logits"] = seen["i2t_logits"]
            ours["stage2_i2t_loss"] = _unit_scale(i2t)(seen, y)["loss_i2t"]
    ours["stage2_loss"] = total
    params = dict(model.named_parameters())
    for ref_key in out.get("stage2_grads", {}):
        target = reference_checkpoint.to_model_key(model, ref_key)
        if target in params:
            grad = params[target].grad
            ours[f"stage2_grads.{ref_key}"] = grad if grad is not None else torch.zeros_like(params[target])


def replay_case(case: Dict[str, Any], clip_weights: str, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> Tuple[Dict[str, Any], nn.Module, CfgNode]:
    """Rebuild the case's model and recompute its outputs with this toolkit.

    Order as the reference produced them: eval-mode features and encoder outputs, the
    stage-1 image features, the text side, one stage-1 step (on the reference's cached image
    features), the stage-2 text features, then one training forward/backward (with the
    reference's frozen text features), which also updates the BatchNorm statistics.

    Args:
        case: a loaded case (:func:`load_case`).
        clip_weights: the case's CLIP weights file (:func:`resolve_clip_weights`).
        device: torch device to run on ("cpu", "cuda", ...); TF32 is off meanwhile.
        dtype: torch.float32, or torch.float64 to replay in double precision (model and inputs
            ``.double()``; no cast down anywhere on the way).

    Returns:
        (ours, model, cfg): ``ours`` maps the reference's flattened output names
        (:func:`flatten_outputs`) to this toolkit's tensors, on the CPU; only outputs this
        model can produce are present.
    """
    dev = torch.device(device)
    cfg = parity_cfg(case["meta"], clip_weights)
    model = build_reference_model(cfg, case["state_dict"]).to(dev, dtype)
    inputs = case["inputs"]
    batch = {"images": inputs["images"].to(dtype), "targets": inputs["labels"], "camids": inputs["cam_ids"],
             "viewids": inputs["view_ids"], "img_paths": [""] * len(inputs["labels"])}
    ours: Dict[str, Any] = {}
    with _strict_fp32(dev):
        _replay_eval(model, inputs, batch, ours)
        if getattr(model, "text_head", None) is not None:
            _replay_text_and_stage1(model, cfg, case, ours)
        _replay_stage2(model, case, batch, ours)
    ours = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in ours.items()}
    return ours, model, cfg


def _replay_schedules(model: nn.Module, cfg: CfgNode, schedules: Dict[str, Any]) -> Dict[str, Any]:
    """Optimizer groups and LR schedules as training builds and steps them."""
    from clipreid_plugin.solver import build_lr_scheduler, build_optimizer

    ours: Dict[str, Any] = {}
    if getattr(model, "text_head", None) is not None:
        # the stage-1 hook's own optimizer and schedule, stepped before every epoch as its loop does
        params = model.stage1_parameters()
        for p in params:
            p.requires_grad_(True)
        optimizer = build_stage1_optimizer(cfg, model)
        scheduler = build_stage1_scheduler(cfg, optimizer)
        lrs = []
        for _ in range(cfg.CLIPREID.STAGE1.MAX_EPOCHS):
            scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
        ours["stage1_lr_per_epoch"] = lrs
        ours["stage1_param_group_names"] = [reference_checkpoint.to_reference_key(model, n)
                                            for g in optimizer.param_groups for n in g["names"]]
        for p in params:
            p.requires_grad_(False)

    # Stage 2: the trainer builds its optimizer on the model with the text side frozen.
    optimizer = build_optimizer(cfg, model)
    # one row per tensor (the reference's one-group-per-tensor layout), whatever the grouping here
    groups = [{"name": reference_checkpoint.to_reference_key(model, n), "lr": g["lr"], "weight_decay": g["weight_decay"],
               "index": j} for j, g in enumerate(optimizer.param_groups) for n in g["names"]]
    ours["stage2_param_groups"] = groups
    by_name = {g["name"]: g["index"] for g in groups}
    ref_groups = schedules.get("stage2_param_groups") or []
    first = by_name.get(ref_groups[0]["name"], 0) if ref_groups else 0
    weight = next(g["index"] for g in groups if "bias" not in g["name"])
    # The reference names the parameter whose LR curve it stored as the bias group's; its row
    # checks that this parameter is an optimizer group here too (and gives our curve the same one).
    example = schedules.get("stage2_bias_group_example")
    bias = by_name.get(example) if example in by_name else \
        next((g["index"] for g in groups if "bias" in g["name"]), None)
    if example is not None:
        ours["stage2_bias_group_example"] = example if example in by_name else (
            next((g["name"] for g in groups if g["index"] == bias), None))
    scheduler = build_lr_scheduler(cfg, optimizer, iters_per_epoch=1)
    ours["stage2_lr_at_construction_group0"] = optimizer.param_groups[first]["lr"]
    weight_lrs, bias_lrs = [], []
    for _ in range(cfg.SOLVER.MAX_EPOCHS):
        scheduler.step()  # the LRScheduler hook's before_epoch (SOLVER.SCHED.UNIT "epoch")
        weight_lrs.append(optimizer.param_groups[weight]["lr"])
        if bias is not None:
            bias_lrs.append(optimizer.param_groups[bias]["lr"])
    ours["stage2_lr_per_epoch_weight_group"] = weight_lrs
    if bias is not None:
        ours["stage2_lr_per_epoch_bias_group"] = bias_lrs
    return ours


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------
def _is_grad(name: str) -> bool:
    return name.startswith(("stage2_grads.", "stage1_grad_"))


def tensor_bound(name: str, ref: torch.Tensor, tolerance: Tolerance) -> Tuple[float, str]:
    """The bound on ``max|ours - ref|`` of one output and how it was set (the table's text).

    Args:
        name: the output's flattened name.
        ref: the reference tensor.
        tolerance: the replay's precision and the reference's own float32 error.

    Returns:
        (bound, description).
    """
    scale = ref.abs().max().item() if ref.numel() else 0.0
    if tolerance.dtype == torch.float64:
        return FLOAT64_RTOL * max(1.0, scale), f"{FLOAT64_RTOL * max(1.0, scale):.1e} abs (1e-9 max(1,|ref|))"
    if _is_grad(name):
        bound, text = GRAD_ATOL + GRAD_RTOL * scale, "1e-5 + 5e-5 max|ref|"
    else:
        bound, text = FEATURE_ATOL * max(1.0, scale), "1e-5 max(1,|ref|)"
    rounding = (tolerance.rounding or {}).get(name)
    if rounding is not None and ROUNDING_FACTOR * rounding > bound:
        bound, text = ROUNDING_FACTOR * rounding, "2 x |ref32-ref64|"
    return bound, f"{bound:.1e} abs ({text})"


def _compare_tensor(name: str, mine: Any, ref: torch.Tensor, tolerance: Tolerance) -> ParityRow:
    if not isinstance(mine, torch.Tensor):
        return ParityRow(name, math.nan, "-", False, "not checked: this model does not produce it")
    if tuple(mine.shape) != tuple(ref.shape):
        return ParityRow(name, math.nan, "-", False, f"shape {tuple(mine.shape)}, reference {tuple(ref.shape)}")
    if not ref.is_floating_point():
        err = (mine.long() - ref.long()).abs().max().item() if ref.numel() else 0
        return ParityRow(name, float(err), "exact", err == 0, "" if err == 0 else "integer values differ")
    diff = (mine.double() - ref.double()).abs()
    err = diff.max().item() if diff.numel() else 0.0
    bound, tol = tensor_bound(name, ref, tolerance)
    ok = err <= bound  # False for NaN
    return ParityRow(name, err, tol, ok, "" if ok else "above tolerance")


def rounding_errors(case32: Dict[str, Any], case64: Dict[str, Any]) -> Dict[str, float]:
    """The reference's own float32 error per output: ``max|ref32 - ref64|``.

    Args:
        case32: a float32 case.
        case64: the same case computed by the reference in float64.

    Returns:
        {flattened output name: max abs difference} for the floating-point outputs of both.
    """
    ref32, ref64 = flatten_outputs(case32["outputs"]), flatten_outputs(case64["outputs"])
    errors = {}
    for name, a in ref32.items():
        b = ref64.get(name)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.is_floating_point() \
                and a.shape == b.shape and a.numel():
            errors[name] = (a.double() - b.double()).abs().max().item()
    return errors


def _compare_lrs(name: str, mine: Optional[Sequence[float]], ref: Any) -> ParityRow:
    ref_list = [float(v) for v in (ref.tolist() if isinstance(ref, torch.Tensor) else
                                   (ref if isinstance(ref, (list, tuple)) else [ref]))]
    if mine is None:
        return ParityRow(name, math.nan, "-", False, "not checked: this model has no such schedule")
    mine_list = [float(v) for v in (mine if isinstance(mine, (list, tuple)) else [mine])]
    if len(mine_list) != len(ref_list):
        return ParityRow(name, math.nan, f"{LR_RTOL:.0e} rel", False,
                         f"{len(mine_list)} epochs, reference {len(ref_list)} (MAX_EPOCHS translated wrongly?)")
    err = max((abs(a - b) / abs(b) if b else abs(a) for a, b in zip(mine_list, ref_list)), default=0.0)
    ok = err <= LR_RTOL
    return ParityRow(name, err, f"{LR_RTOL:.0e} rel", ok, "" if ok else "learning rates differ")


def _compare_groups(name: str, mine: Optional[List[Dict[str, Any]]], ref: List[Dict[str, Any]]) -> ParityRow:
    if mine is None:
        return ParityRow(name, math.nan, "-", False, "not checked")
    ours = {g["name"]: g for g in mine}
    refs = {g["name"]: g for g in ref}
    problems = [f"missing {n}" for n in refs if n not in ours] + [f"extra {n}" for n in ours if n not in refs]
    for n in refs.keys() & ours.keys():
        for key in ("lr", "weight_decay"):
            a, b = float(ours[n][key]), float(refs[n][key])
            if abs(a - b) > LR_RTOL * abs(b):
                problems.append(f"{n} {key} {a:g} vs {b:g}")
    ok = not problems
    return ParityRow(name, float(len(problems)), "exact names; lr, wd 1e-12 rel", ok,
                     "" if ok else f"{len(problems)} mismatches: " + "; ".join(sorted(problems)[:3]))


def _compare_exact(name: str, mine: Any, ref: Any) -> ParityRow:
    ok = mine == ref
    return ParityRow(name, 0.0 if ok else 1.0, "exact", ok, "" if ok else f"ours {mine!r}, reference {ref!r}")


_SCHEDULE_KINDS = {
    "stage1_lr_per_epoch": _compare_lrs, "stage2_lr_per_epoch_weight_group": _compare_lrs,
    "stage2_lr_per_epoch_bias_group": _compare_lrs, "stage2_lr_at_construction_group0": _compare_lrs,
    "stage2_param_groups": _compare_groups,
    "stage1_param_group_names": _compare_exact, "stage2_bias_group_example": _compare_exact,
}


def compare_case(case: Dict[str, Any], ours: Dict[str, Any], our_schedules: Dict[str, Any],
                 tolerance: Tolerance = Tolerance()) -> List[ParityRow]:
    """One row per output and schedule entry of the case file, in the file's order.

    Entries this toolkit does not produce are FAILED rows marked "not checked" (never skipped).

    Args:
        case: the case.
        ours: :func:`replay_case`'s outputs.
        our_schedules: the recomputed schedules and optimizer groups.
        tolerance: precision of the replay and the reference's float32 error (see the module doc).

    Returns:
        The rows.
    """
    rows: List[ParityRow] = []
    for name, ref in flatten_outputs(case["outputs"]).items():
        if not isinstance(ref, torch.Tensor):
            rows.append(ParityRow(name, math.nan, "-", False, f"not checked: unknown kind {type(ref).__name__}"))
        elif name not in ours:
            rows.append(ParityRow(name, math.nan, "-", False, "not checked: unknown output"))
        else:
            rows.append(_compare_tensor(name, ours[name], ref, tolerance))
    for name, ref in case["schedules"].items():
        compare = _SCHEDULE_KINDS.get(name)
        label = f"schedules.{name}"
        if compare is None:
            rows.append(ParityRow(label, math.nan, "-", False, "not checked: unknown schedule entry"))
        else:
            rows.append(compare(label, our_schedules.get(name), ref))
    return rows


def float64_case_path(case_path: str) -> Optional[str]:
    """Returns: ``<folder>/float64/<name>`` next to a float32 case file, if it exists."""
    path = os.path.join(os.path.dirname(os.path.abspath(case_path)), "float64", os.path.basename(case_path))
    return path if os.path.isfile(path) else None


def run_case(case: Dict[str, Any], tiny_clip_dir: str, device: str, dtype: torch.dtype,
             float64_reference: Optional[Dict[str, Any]] = None) -> List[ParityRow]:
    """Replay a reference case with this toolkit and compare every output and schedule it holds.

    Args:
        case: a loaded case (:func:`load_case`).
        tiny_clip_dir: folder holding the case's CLIP weights ``meta.tiny_clip_file`` (normally
            the case file's folder).
        device: torch device to run on.
        dtype: precision of the replay. A float64 replay of a float32 case is compared with the
            float64 bound.
        float64_reference: the same case computed in float64: bounds a float32 replay by the
            reference's own float32 error (see the module doc).

    Returns:
        One :class:`ParityRow` per entry of ``case["outputs"]`` (flattened) and
        ``case["schedules"]``.

    Raises:
        CaseFormatError: the CLIP weights file is missing.
    """
    clip_weights = resolve_clip_weights(case["meta"], tiny_clip_dir)
    ours, model, cfg = replay_case(case, clip_weights, device, dtype)
    schedules = _replay_schedules(model, cfg, case["schedules"])
    rounding = rounding_errors(case, float64_reference) if float64_reference is not None and dtype == torch.float32 \
        else None
    return compare_case(case, ours, schedules, Tolerance(dtype, rounding))
