"""Read a fast-reid YAML config and write this toolkit's equivalent, naming what cannot be mapped.

fast-reid (JDAI-CV/fast-reid @ c9bc3ce) and this toolkit share the detectron2-style CLI and,
for fast-reid's own methods (BoT, AGW, SBS, MGN), fast-reid's key names *and meanings*
(``MODEL.BACKBONE.WITH_IBN``, ``MODEL.HEADS.NECK_FEAT`` = the feature the triplet loss sees,
``SOLVER.WARMUP_ITERS``, ``SOLVER.STEPS`` counted once warmup is over, ...). The differences
are in :data:`KEY_MAP` (renamed keys, value conversions such as ``MODEL.PIXEL_MEAN`` on 0..255
becoming ``INPUT.PIXEL_MEAN`` on 0..1), :data:`SAME_BEHAVIOUR` (fast-reid switches whose
value here is the only behaviour there is: dropped when they hold it) and everything else,
which is reported as not mapped with the reason. A mapped key whose target this build does
not have (a component not installed) is reported as not mapped too.

The keys that define a method (model, losses, train transforms, solver, test metric) that a
fast-reid file does not set take fast-reid's defaults (:data:`FASTREID_DEFAULTS`), as they would
there; every other key a file does not set takes this toolkit's default.

    from clipreid_plugin.usertools.fastreid_config import convert_fastreid_config
    ours, unmapped = convert_fastreid_config("fastreid/configs/Market1501/sbs_R50-ibn.yml")
"""

import ast
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import yaml

from clipreid_plugin import modeling
from clipreid_plugin.config import as_name_list, get_cfg
from clipreid_plugin.data import DATASET_REGISTRY, SAMPLER_REGISTRY
from clipreid_plugin.modeling.backbones.resnet import RESNET_ARCHS
from clipreid_plugin.modeling.backbones.torchvision_weights import torchvision_weights_file_name
from clipreid_plugin.utils.errors import InputFileError, InvalidInputError

__all__ = ["Mapping", "KEY_MAP", "SAME_BEHAVIOUR", "FASTREID_DEFAULTS", "Unmapped", "read_fastreid_yaml",
           "is_fastreid_config", "convert_fastreid_config", "convert_fastreid_config_with_notes", "converted_yaml"]


class Mapping(NamedTuple):
    """One fast-reid key and where it goes here.

    Attributes:
        fastreid: the fast-reid key (dotted).
        ours: this toolkit's key.
        convert: value -> our value; raises ValueError (with the reason) when the value has no
            equivalent here.
        note: what changes, for the docs' mapping table ("" = same meaning).
    """

    fastreid: str
    ours: str
    convert: Optional[Callable[[Any], Any]] = None
    note: str = ""


class Unmapped(NamedTuple):
    """A fast-reid key (with its value) that the converted config leaves out, and why."""

    key: str
    value: Any
    reason: str


def _names(table: Dict[str, str], what: str) -> Callable[[Any], Any]:
    def convert(value):
        if value not in table:
            raise ValueError(f"no {what} {value!r} here (known: {', '.join(sorted(table))})")
        return table[value]
    return convert


def _registered(registry_name: str, what: str) -> Callable[[Any], Any]:
    """A converter that keeps the name when this build registers it (fast-reid's names are ours)."""
    def convert(value):
        registry = getattr(modeling, registry_name)
        names = as_name_list(value)
        missing = [n for n in names if n not in registry.names()]
        if missing:
            raise ValueError(f"no {what} {', '.join(missing)} here (registered: {', '.join(registry.names())}; a new "
                             f"one is one registered class, see README 'Extending')")
        return names if isinstance(value, (list, tuple)) else value
    return convert


def _per_255(value) -> List[float]:
    return [round(float(v) / 255.0, 6) for v in value]


def _sampler(value) -> str:
    ours = SAMPLERS.get(value, value)
    if ours not in SAMPLER_REGISTRY.names():
        raise ValueError(f"no sampler {value!r} here (registered: {', '.join(SAMPLER_REGISTRY.names())})")
    return ours


def _dataset_names(value) -> List[str]:
    names = []
    for n in as_name_list(value):
        n = VEHICLEID_TESTS.get(n, n)
        if n not in DATASET_REGISTRY.names():
            raise ValueError(f"no dataset {n!r} here (registered: {', '.join(DATASET_REGISTRY.names())})")
        if n not in names:
            names.append(n)
    return names


SAMPLERS = {"NaiveIdentitySampler": "PKSampler", "TrainingSampler": "RandomSampler",
            "BalancedIdentitySampler": "BalancedIdentitySampler"}
OPTIMIZERS = {"Adam": "Adam", "AdamW": "AdamW", "SGD": "SGD"}
SCHEDULERS = {"MultiStepLR": "MultiStepLR", "CosineAnnealingLR": "CosineAnnealingLR"}
# fast-reid's VehicleID test sets; here one dataset, its size DATASETS.VEHICLEID.TEST_SIZE per run
VEHICLEID_TESTS = {"SmallVehicleID": "VehicleID", "MediumVehicleID": "VehicleID", "LargeVehicleID": "VehicleID"}

# fast-reid key -> ours; every key of fast-reid's defaults that has an equivalent here
KEY_MAP: List[Mapping] = [
    Mapping("MODEL.META_ARCHITECTURE", "MODEL.META_ARCHITECTURE", _registered("META_ARCH_REGISTRY",
                                                                              "meta-architecture")),
    Mapping("MODEL.DEVICE", "MODEL.DEVICE", note="also `auto`, `cpu`"),
    Mapping("MODEL.WEIGHTS", "MODEL.WEIGHTS"),
    Mapping("MODEL.FREEZE_LAYERS", "MODEL.FREEZE_LAYERS"),
    Mapping("MODEL.PIXEL_MEAN", "INPUT.PIXEL_MEAN", _per_255, "0..255 there, 0..1 here (divided by 255)"),
    Mapping("MODEL.PIXEL_STD", "INPUT.PIXEL_STD", _per_255, "0..255 there, 0..1 here (divided by 255)"),
    Mapping("MODEL.BACKBONE.NAME", "MODEL.BACKBONE.NAME", _registered("BACKBONE_REGISTRY", "backbone")),
    Mapping("MODEL.BACKBONE.NORM", "MODEL.BACKBONE.NORM"),
    Mapping("MODEL.BACKBONE.DEPTH", "MODEL.BACKBONE.DEPTH"),
    Mapping("MODEL.BACKBONE.LAST_STRIDE", "MODEL.BACKBONE.LAST_STRIDE"),
    Mapping("MODEL.BACKBONE.WITH_IBN", "MODEL.BACKBONE.WITH_IBN"),
    Mapping("MODEL.BACKBONE.WITH_SE", "MODEL.BACKBONE.WITH_SE"),
    Mapping("MODEL.BACKBONE.WITH_NL", "MODEL.BACKBONE.WITH_NL"),
    Mapping("MODEL.BACKBONE.PRETRAIN", "MODEL.BACKBONE.PRETRAIN"),
    Mapping("MODEL.BACKBONE.PRETRAIN_PATH", "MODEL.BACKBONE.PRETRAIN_PATH",
            note="a local ImageNet file; when unset with `PRETRAIN True` and a plain ResNet, the converter writes "
                 "torchvision's cache path (`~/.cache/torch/hub/checkpoints/resnet50-0676ba61.pth` for 50x)"),
    Mapping("MODEL.HEADS.NAME", "MODEL.HEADS.NAME", _registered("HEAD_REGISTRY", "head")),
    Mapping("MODEL.HEADS.NUM_CLASSES", "MODEL.HEADS.NUM_CLASSES", note="0 = from the training set, as there"),
    Mapping("MODEL.HEADS.WITH_BNNECK", "MODEL.HEADS.WITH_BNNECK"),
    Mapping("MODEL.HEADS.EMBEDDING_DIM", "MODEL.HEADS.EMBEDDING_DIM"),
    Mapping("MODEL.HEADS.NECK_FEAT", "MODEL.HEADS.NECK_FEAT",
            note="the feature the triplet loss sees, as there; evaluation uses the post-neck feature "
                 "(`MODEL.HEADS.EVAL_FEAT after`, written by the converter)"),
    Mapping("MODEL.HEADS.POOL_LAYER", "MODEL.HEADS.POOL_LAYER"),
    Mapping("MODEL.HEADS.CLS_LAYER", "MODEL.HEADS.CLS_LAYER"),
    Mapping("MODEL.HEADS.SCALE", "MODEL.HEADS.SCALE"),
    Mapping("MODEL.HEADS.MARGIN", "MODEL.HEADS.MARGIN"),
    Mapping("MODEL.LOSSES.NAME", "MODEL.LOSSES.NAMES", _registered("LOSS_REGISTRY", "loss")),
    Mapping("MODEL.LOSSES.CE.EPSILON", "MODEL.LOSSES.CE.EPSILON",
            note="with fast-reid's smoothing convention (`MODEL.LOSSES.CE.CONVENTION fastreid`, written by the "
                 "converter)"),
    Mapping("MODEL.LOSSES.CE.ALPHA", "MODEL.LOSSES.CE.ALPHA"),
    Mapping("MODEL.LOSSES.CE.SCALE", "MODEL.LOSSES.CE.SCALE"),
    Mapping("MODEL.LOSSES.TRI.MARGIN", "MODEL.LOSSES.TRI.MARGIN", note="0 = soft margin, as there"),
    Mapping("MODEL.LOSSES.TRI.HARD_MINING", "MODEL.LOSSES.TRI.HARD_MINING"),
    Mapping("MODEL.LOSSES.TRI.NORM_FEAT", "MODEL.LOSSES.TRI.NORM_FEAT"),
    Mapping("MODEL.LOSSES.TRI.SCALE", "MODEL.LOSSES.TRI.SCALE"),
    Mapping("MODEL.LOSSES.CIRCLE.MARGIN", "MODEL.LOSSES.CIRCLE.MARGIN"),
    Mapping("MODEL.LOSSES.CIRCLE.GAMMA", "MODEL.LOSSES.CIRCLE.GAMMA"),
    Mapping("MODEL.LOSSES.CIRCLE.SCALE", "MODEL.LOSSES.CIRCLE.SCALE"),
    Mapping("MODEL.LOSSES.COSFACE.MARGIN", "MODEL.LOSSES.COSFACE.MARGIN"),
    Mapping("MODEL.LOSSES.COSFACE.GAMMA", "MODEL.LOSSES.COSFACE.GAMMA"),
    Mapping("MODEL.LOSSES.COSFACE.SCALE", "MODEL.LOSSES.COSFACE.SCALE"),
    Mapping("INPUT.SIZE_TRAIN", "INPUT.SIZE_TRAIN"),
    Mapping("INPUT.SIZE_TEST", "INPUT.SIZE_TEST"),
    Mapping("INPUT.FLIP.ENABLED", "INPUT.FLIP.ENABLED"),
    Mapping("INPUT.FLIP.PROB", "INPUT.FLIP.PROB"),
    Mapping("INPUT.PADDING.ENABLED", "INPUT.PADDING.ENABLED"),
    Mapping("INPUT.PADDING.SIZE", "INPUT.PADDING.SIZE"),
    Mapping("INPUT.PADDING.MODE", "INPUT.PADDING.MODE"),
    Mapping("INPUT.REA.ENABLED", "INPUT.REA.ENABLED",
            note="torchvision's rectangle ranges (`INPUT.REA.AREA [0.02, 0.33]`, `ASPECT 0.3`, `ASPECT_MAX 3.3`) and "
                 "fast-reid's bicubic resizes (`INPUT.INTERPOLATION_TRAIN/TEST bicubic`), written by the converter; "
                 "the rectangle draws are timm's"),
    Mapping("INPUT.REA.PROB", "INPUT.REA.PROB"),
    Mapping("INPUT.REA.VALUE", "INPUT.REA.VALUE", lambda v: [float(x) for x in v],
            note="the same 0..255 fill (default: the ImageNet mean, 0 after normalisation); `[]` here fills with "
                 "N(0, 1) noise (the CLIP-ReID reference's)"),
    Mapping("INPUT.AUTOAUG.ENABLED", "INPUT.TRANSFORMS", lambda on: ["AutoAugment"] if on else [],
            "`INPUT.TRANSFORMS: [AutoAugment]` (a registered train augmentation), applied after the resize here"),
    Mapping("INPUT.AUTOAUG.PROB", "INPUT.AUTOAUG.PROB"),
    Mapping("DATASETS.NAMES", "DATASETS.NAMES", _dataset_names),
    Mapping("DATASETS.TESTS", "DATASETS.TESTS", _dataset_names,
            "`Small/Medium/LargeVehicleID` -> `VehicleID` (one test size per run: `DATASETS.VEHICLEID.TEST_SIZE`)"),
    Mapping("DATALOADER.SAMPLER_TRAIN", "DATALOADER.SAMPLER", _sampler,
            "`NaiveIdentitySampler` -> `PKSampler`, `TrainingSampler` -> `RandomSampler`"),
    Mapping("DATALOADER.NUM_INSTANCE", "DATALOADER.NUM_INSTANCE"),
    Mapping("DATALOADER.NUM_WORKERS", "DATALOADER.NUM_WORKERS"),
    Mapping("SOLVER.AMP.ENABLED", "SOLVER.AMP.ENABLED"),
    Mapping("SOLVER.OPT", "SOLVER.OPTIMIZER_NAME", _names(OPTIMIZERS, "optimizer"), "`Adam`, `AdamW`, `SGD`"),
    Mapping("SOLVER.MAX_EPOCH", "SOLVER.MAX_EPOCHS"),
    Mapping("SOLVER.BASE_LR", "SOLVER.BASE_LR"),
    Mapping("SOLVER.BIAS_LR_FACTOR", "SOLVER.BIAS_LR_FACTOR"),
    Mapping("SOLVER.HEADS_LR_FACTOR", "SOLVER.HEADS_LR_FACTOR"),
    Mapping("SOLVER.MOMENTUM", "SOLVER.MOMENTUM"),
    Mapping("SOLVER.NESTEROV", "SOLVER.NESTEROV"),
    Mapping("SOLVER.WEIGHT_DECAY", "SOLVER.WEIGHT_DECAY"),
    Mapping("SOLVER.WEIGHT_DECAY_NORM", "SOLVER.WEIGHT_DECAY_NORM"),
    Mapping("SOLVER.WEIGHT_DECAY_BIAS", "SOLVER.WEIGHT_DECAY_BIAS"),
    Mapping("SOLVER.IMS_PER_BATCH", "SOLVER.IMS_PER_BATCH", note="global batch in both"),
    Mapping("SOLVER.SCHED", "SOLVER.SCHED.NAME", _names(SCHEDULERS, "schedule"),
            "fast-reid's schedules under their names: per-iteration warmup, then the epoch schedule"),
    Mapping("SOLVER.DELAY_EPOCHS", "SOLVER.DELAY_EPOCHS"),
    Mapping("SOLVER.STEPS", "SOLVER.STEPS_EPOCHS",
            note="counted as there: epochs after warmup (with `SOLVER.SCHED.NAME MultiStepLR`)"),
    Mapping("SOLVER.GAMMA", "SOLVER.GAMMA"),
    Mapping("SOLVER.ETA_MIN_LR", "SOLVER.ETA_MIN_LR"),
    Mapping("SOLVER.WARMUP_FACTOR", "SOLVER.WARMUP_FACTOR"),
    Mapping("SOLVER.WARMUP_ITERS", "SOLVER.WARMUP_ITERS", note="`SOLVER.WARMUP_EPOCHS 0` written with it"),
    Mapping("SOLVER.WARMUP_METHOD", "SOLVER.WARMUP_METHOD"),
    Mapping("SOLVER.FREEZE_ITERS", "SOLVER.FREEZE_ITERS"),
    Mapping("SOLVER.CLIP_GRADIENTS.ENABLED", "SOLVER.CLIP_GRADIENTS.ENABLED"),
    Mapping("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE"),
    Mapping("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE"),
    Mapping("SOLVER.CLIP_GRADIENTS.NORM_TYPE", "SOLVER.CLIP_GRADIENTS.NORM_TYPE"),
    Mapping("SOLVER.CHECKPOINT_PERIOD", "SOLVER.CHECKPOINT_PERIOD", note="epochs in both"),
    Mapping("TEST.EVAL_PERIOD", "TEST.EVAL_PERIOD", note="epochs in both"),
    Mapping("TEST.IMS_PER_BATCH", "TEST.IMS_PER_BATCH"),
    Mapping("TEST.METRIC", "TEST.METRIC", _names({"cosine": "cosine", "euclidean": "euclidean"}, "metric")),
    Mapping("TEST.ROC.ENABLED", "TEST.ROC.ENABLED"),
    Mapping("TEST.FLIP.ENABLED", "TEST.FLIP.ENABLED", note="the flipped copy is normalised once here"),
    Mapping("TEST.AQE.ENABLED", "TEST.AQE.ENABLED"),
    Mapping("TEST.AQE.ALPHA", "TEST.AQE.ALPHA"),
    Mapping("TEST.AQE.QE_TIME", "TEST.AQE.QE_TIME"),
    Mapping("TEST.AQE.QE_K", "TEST.AQE.QE_K"),
    Mapping("TEST.RERANK.ENABLED", "TEST.RERANK.ENABLED"),
    Mapping("TEST.RERANK.K1", "TEST.RERANK.K1"),
    Mapping("TEST.RERANK.K2", "TEST.RERANK.K2"),
    Mapping("TEST.RERANK.LAMBDA", "TEST.RERANK.LAMBDA"),
    Mapping("CUDNN_BENCHMARK", "CUDNN_BENCHMARK"),
    Mapping("OUTPUT_DIR", "OUTPUT_DIR"),
]

# fast-reid switches whose value here is the only behaviour: dropped when they hold it
SAME_BEHAVIOUR: Dict[str, Any] = {
    "MODEL.HEADS.NORM": "BN", "DATASETS.COMBINEALL": False, "INPUT.CJ.ENABLED": False,
    "INPUT.AFFINE.ENABLED": False, "INPUT.AUGMIX.ENABLED": False, "INPUT.CROP.ENABLED": False,
    "INPUT.RPT.ENABLED": False, "TEST.PRECISE_BN.ENABLED": False, "KD.MODEL_CONFIG": [],
    "MODEL.BACKBONE.FEAT_DIM": None,  # inferred from the built backbone here, any value
}

# fast-reid's defaults (fastreid/config/defaults.py @ c9bc3ce) of the keys that define a method (model, losses,
# train transforms, solver, test metric): a file that does not set one of them gets these there, so the
# converted config does too. Every other key a file does not set takes this toolkit's default.
FASTREID_DEFAULTS: Dict[str, Any] = {
    "MODEL.META_ARCHITECTURE": "Baseline", "MODEL.FREEZE_LAYERS": [],
    "MODEL.PIXEL_MEAN": [0.485 * 255, 0.456 * 255, 0.406 * 255], "MODEL.PIXEL_STD": [0.229 * 255, 0.224 * 255,
                                                                                    0.225 * 255],
    "MODEL.BACKBONE.NAME": "build_resnet_backbone", "MODEL.BACKBONE.DEPTH": "50x", "MODEL.BACKBONE.LAST_STRIDE": 1,
    "MODEL.BACKBONE.NORM": "BN", "MODEL.BACKBONE.WITH_IBN": False, "MODEL.BACKBONE.WITH_SE": False,
    "MODEL.BACKBONE.WITH_NL": False, "MODEL.BACKBONE.PRETRAIN": True,
    "MODEL.HEADS.NAME": "EmbeddingHead", "MODEL.HEADS.EMBEDDING_DIM": 0, "MODEL.HEADS.WITH_BNNECK": False,
    "MODEL.HEADS.NECK_FEAT": "before", "MODEL.HEADS.POOL_LAYER": "GlobalAvgPool", "MODEL.HEADS.CLS_LAYER": "Linear",
    "MODEL.HEADS.MARGIN": 0.0, "MODEL.HEADS.SCALE": 1,
    "MODEL.LOSSES.NAME": ("CrossEntropyLoss",), "MODEL.LOSSES.CE.EPSILON": 0.0, "MODEL.LOSSES.CE.ALPHA": 0.2,
    "MODEL.LOSSES.CE.SCALE": 1.0, "MODEL.LOSSES.TRI.MARGIN": 0.3, "MODEL.LOSSES.TRI.NORM_FEAT": False,
    "MODEL.LOSSES.TRI.HARD_MINING": False, "MODEL.LOSSES.TRI.SCALE": 1.0,
    "MODEL.LOSSES.CIRCLE.MARGIN": 0.25, "MODEL.LOSSES.CIRCLE.GAMMA": 128, "MODEL.LOSSES.CIRCLE.SCALE": 1.0,
    "MODEL.LOSSES.COSFACE.MARGIN": 0.25, "MODEL.LOSSES.COSFACE.GAMMA": 128, "MODEL.LOSSES.COSFACE.SCALE": 1.0,
    "INPUT.SIZE_TRAIN": [256, 128], "INPUT.SIZE_TEST": [256, 128], "INPUT.FLIP.ENABLED": False,
    "INPUT.FLIP.PROB": 0.5, "INPUT.PADDING.ENABLED": False, "INPUT.PADDING.MODE": "constant",
    "INPUT.PADDING.SIZE": 10, "INPUT.REA.ENABLED": False, "INPUT.REA.PROB": 0.5,
    "INPUT.REA.VALUE": [0.485 * 255, 0.456 * 255, 0.406 * 255], "INPUT.AUTOAUG.ENABLED": False,
    "INPUT.AUTOAUG.PROB": 0.0,
    "DATALOADER.SAMPLER_TRAIN": "TrainingSampler", "DATALOADER.NUM_INSTANCE": 4,
    "SOLVER.OPT": "Adam", "SOLVER.MAX_EPOCH": 120, "SOLVER.BASE_LR": 3e-4, "SOLVER.BIAS_LR_FACTOR": 1.0,
    "SOLVER.HEADS_LR_FACTOR": 1.0, "SOLVER.MOMENTUM": 0.9, "SOLVER.NESTEROV": False, "SOLVER.WEIGHT_DECAY": 5e-4,
    "SOLVER.WEIGHT_DECAY_NORM": 5e-4, "SOLVER.WEIGHT_DECAY_BIAS": 5e-4, "SOLVER.SCHED": "MultiStepLR",
    "SOLVER.DELAY_EPOCHS": 0, "SOLVER.GAMMA": 0.1, "SOLVER.STEPS": [30, 55], "SOLVER.ETA_MIN_LR": 1e-7,
    "SOLVER.WARMUP_FACTOR": 0.1, "SOLVER.WARMUP_ITERS": 1000, "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.FREEZE_ITERS": 0, "SOLVER.IMS_PER_BATCH": 64, "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "norm", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 5.0,
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": 2.0,
    "TEST.METRIC": "cosine", "TEST.FLIP.ENABLED": False,
}

# reasons for fast-reid keys without an equivalent (others: "no such key here")
REASONS: Dict[str, str] = {
    "MODEL.BACKBONE.ATT_DROP_RATE": "fast-reid's ViT options: use configs/<Dataset>/transreid_vit_b16.yml",
    "MODEL.BACKBONE.DROP_PATH_RATIO": "fast-reid's ViT options: use configs/<Dataset>/transreid_vit_b16.yml",
    "MODEL.BACKBONE.DROP_RATIO": "fast-reid's ViT options: use configs/<Dataset>/transreid_vit_b16.yml",
    "MODEL.BACKBONE.STRIDE_SIZE": "fast-reid's ViT options: use configs/<Dataset>/transreid_vit_b16.yml",
}

# keys that mark a file as fast-reid's (this toolkit names them otherwise)
FASTREID_ONLY_KEYS = ("SOLVER.OPT", "SOLVER.MAX_EPOCH", "SOLVER.STEPS", "DATALOADER.SAMPLER_TRAIN",
                      "MODEL.LOSSES.NAME", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD")


def _dotted(tree: Dict, prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_dotted(v, key + "."))
        else:
            out[key] = v
    return out


def _literal(value):
    """yacs reads "(a, b,)" strings as Python literals; so do we."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def read_fastreid_yaml(path: str, _seen: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """Read a fast-reid config with its ``_BASE_`` chain (paths relative to the file).

    Args:
        path: the fast-reid YAML file.

    Returns:
        The merged config as ``{dotted key: value}`` (string literals such as
        ``'("CrossEntropyLoss",)'`` decoded as yacs decodes them).
    """
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        where = f" (the _BASE_ of {_seen[-1]})" if _seen else ""
        raise InputFileError(f"fast-reid config {path}{where} not found.")
    if path in _seen:
        raise InvalidInputError(f"_BASE_ loop: {' -> '.join(_seen + (path,))}.")
    try:
        with open(path) as f:
            tree = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise InvalidInputError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise InvalidInputError(f"{path} is not a config (expected a YAML mapping at the top).")
    base = tree.pop("_BASE_", None)
    merged: Dict[str, Any] = {}
    if base:
        merged = read_fastreid_yaml(os.path.join(os.path.dirname(path), str(base)), _seen + (path,))
    return dict(merged, **{k: _literal(v) for k, v in _dotted(tree).items()})


def is_fastreid_config(path: str) -> bool:
    """Whether ``path`` (with its ``_BASE_`` chain) is a fast-reid config rather than one of ours.

    A fast-reid file sets a key this toolkit names otherwise (``SOLVER.OPT``, ``SOLVER.MAX_EPOCH``,
    ``SOLVER.STEPS``, ``DATALOADER.SAMPLER_TRAIN``, ``MODEL.LOSSES.NAME``, ``MODEL.PIXEL_MEAN``),
    or ``SOLVER.SCHED`` as a name (a group here).

    Args:
        path: a YAML config file.

    Returns:
        True for a fast-reid config.
    """
    try:
        keys = read_fastreid_yaml(path)
    except (InputFileError, InvalidInputError):
        return False
    return any(k in keys for k in FASTREID_ONLY_KEYS) or isinstance(keys.get("SOLVER.SCHED"), str)


def _lookup(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _as_our_type(value, default):
    """yacs-style widening fast-reid's loader allows: an int where our default is a float."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)) and default and value and \
            isinstance(default[0], float) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return type(value)(float(v) for v in value)
    return value


def _has_key(cfg, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def convert_fastreid_config_with_notes(path: str) -> Tuple[Dict[str, Any], List[Unmapped], List[str]]:
    """:func:`convert_fastreid_config`, plus the notes on what the conversion chose (for logs).

    Returns:
        (ours, unmapped, notes).
    """
    theirs = dict(FASTREID_DEFAULTS, **read_fastreid_yaml(path))
    defaults = get_cfg()
    by_key = {m.fastreid: m for m in KEY_MAP}
    ours: Dict[str, Any] = {}
    unmapped: List[Unmapped] = []
    notes: List[str] = []
    for key, value in theirs.items():
        m = by_key.get(key)
        if m is not None:
            if not _has_key(defaults, m.ours):
                unmapped.append(Unmapped(key, value, f"this build has no {m.ours} (its component is not installed)"))
                continue
            try:
                ours[m.ours] = _as_our_type(m.convert(value) if m.convert else value, _lookup(defaults, m.ours))
            except ValueError as e:
                unmapped.append(Unmapped(key, value, str(e)))
            continue
        if key in SAME_BEHAVIOUR and (SAME_BEHAVIOUR[key] is None or value == SAME_BEHAVIOUR[key]
                                      or (value in ([], (), "") and SAME_BEHAVIOUR[key] in ([], (), ""))):
            continue
        reason = REASONS.get(key) or (f"only {SAME_BEHAVIOUR[key]!r} here" if key in SAME_BEHAVIOUR
                                      else "no such key here")
        unmapped.append(Unmapped(key, value, reason))
    _complete(ours, theirs, defaults, notes)
    order = {m.ours: i for i, m in enumerate(KEY_MAP)}
    return dict(sorted(ours.items(), key=lambda kv: order.get(kv[0], len(order)))), unmapped, notes


def _complete(ours: Dict[str, Any], theirs: Dict[str, Any], defaults, notes: List[str]) -> None:
    """Keys that follow from fast-reid's meaning of the mapped ones."""
    ours["SOLVER.WARMUP_EPOCHS"] = 0  # fast-reid warms up over SOLVER.WARMUP_ITERS iterations
    notes.append("SOLVER.WARMUP_EPOCHS 0: fast-reid's warmup is SOLVER.WARMUP_ITERS iterations")
    if _has_key(defaults, "INPUT.REA.ASPECT_MAX"):  # fast-reid's transforms: bicubic resizes, torchvision's erasing
        ours.update({"INPUT.INTERPOLATION_TRAIN": "bicubic", "INPUT.INTERPOLATION_TEST": "bicubic",
                     "INPUT.REA.AREA": [0.02, 0.33], "INPUT.REA.ASPECT": 0.3, "INPUT.REA.ASPECT_MAX": 3.3})
    if _has_key(defaults, "MODEL.HEADS.EVAL_FEAT"):  # fast-reid evaluates on the post-neck feature
        ours["MODEL.HEADS.EVAL_FEAT"] = "after"
    if _has_key(defaults, "MODEL.LOSSES.CE.CONVENTION"):  # fast-reid's label smoothing and normalisation
        ours["MODEL.LOSSES.CE.CONVENTION"] = "fastreid"
    tests = as_name_list(theirs.get("DATASETS.TESTS", ()))
    if any(t in VEHICLEID_TESTS for t in tests) and _has_key(defaults, "DATASETS.VEHICLEID.TEST_SIZE"):
        ours["DATASETS.VEHICLEID.TEST_SIZE"] = 800
        notes.append(f"DATASETS.TESTS {tests}: VehicleID is tested at one size per run here; "
                     f"DATASETS.VEHICLEID.TEST_SIZE 800 (Small), 1600 (Medium) or 2400 (Large)")
    depth = ours.get("MODEL.BACKBONE.DEPTH", "50x")
    plain_resnet = ours.get("MODEL.BACKBONE.NAME", "build_resnet_backbone") == "build_resnet_backbone" and \
        not theirs.get("MODEL.BACKBONE.WITH_IBN", False)
    if ours.get("MODEL.BACKBONE.PRETRAIN") and not ours.get("MODEL.BACKBONE.PRETRAIN_PATH"):
        if plain_resnet and depth in RESNET_ARCHS:  # fast-reid downloads ImageNet weights; here: torchvision's copy
            ours["MODEL.BACKBONE.PRETRAIN_PATH"] = "~/.cache/torch/hub/checkpoints/" + \
                torchvision_weights_file_name(RESNET_ARCHS[depth][1])
        else:
            notes.append("MODEL.BACKBONE.PRETRAIN True: set MODEL.BACKBONE.PRETRAIN_PATH to the local ImageNet file "
                         "of this backbone (fast-reid downloads it; this toolkit never downloads at run time)")


def convert_fastreid_config(path: str) -> Tuple[Dict[str, Any], List[Unmapped]]:
    """Map a fast-reid config onto this toolkit's keys.

    Args:
        path: the fast-reid YAML file (its ``_BASE_`` chain is followed).

    Returns:
        (ours, unmapped): ``{our dotted key: value}`` in :data:`KEY_MAP` order, and the keys left
        out with their reasons (keys in :data:`SAME_BEHAVIOUR` holding that value are dropped
        silently: they change nothing).
    """
    ours, unmapped, _ = convert_fastreid_config_with_notes(path)
    return ours, unmapped


def converted_yaml(ours: Dict[str, Any], unmapped: List[Unmapped], source: str) -> str:
    """Returns: the YAML text of a converted config, with a header naming the source and every key
    left out (so the file itself says what to check)."""
    tree: Dict[str, Any] = {}
    for key, value in ours.items():
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    lines = [f"# Converted from the fast-reid config {source} by tools/convert_fastreid_config.py.",
             "# Keys it does not set take this toolkit's defaults (clipreid_plugin/config/defaults.py)."]
    if unmapped:
        lines.append("# Not mapped (check these by hand):")
        lines += [f"#   {u.key}: {u.value!r} -- {u.reason}" for u in unmapped]
    return "\n".join(lines) + "\n" + yaml.safe_dump(tree, sort_keys=False, default_flow_style=False)
