"""Read a fast-reid YAML config and write this toolkit's equivalent, naming what cannot be mapped.

fast-reid (JDAI-CV/fast-reid) and this toolkit share the detectron2-style CLI and most key names;
the differences are in :data:`KEY_MAP` (renamed keys, value conversions such as
``MODEL.PIXEL_MEAN`` on 0..255 becoming ``INPUT.PIXEL_MEAN`` on 0..1, and registered names such
as ``MultiStepLR`` -> ``WarmupMultiStepLR``), :data:`SAME_BEHAVIOUR` (fast-reid switches whose
value here is the only behaviour there is: dropped when they hold it) and everything else, which
is reported as not mapped with the reason. Keys a fast-reid file does not set take this
toolkit's defaults, not fast-reid's.

    from clipreid_plugin.usertools.fastreid_config import convert_fastreid_config
    ours, unmapped = convert_fastreid_config("fastreid/configs/Market1501/bagtricks_R50.yml")
"""

import ast
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import yaml

from clipreid_plugin.config import as_name_list
from clipreid_plugin.modeling.backbones.resnet import RESNET_ARCHS
from clipreid_plugin.modeling.backbones.torchvision_weights import torchvision_weights_file_name
from clipreid_plugin.utils.errors import InputFileError, InvalidInputError

__all__ = ["Mapping", "KEY_MAP", "SAME_BEHAVIOUR", "Unmapped", "read_fastreid_yaml", "convert_fastreid_config",
           "converted_yaml"]


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


def _loss_names(value) -> List[str]:
    names = as_name_list(value)
    known = ("CrossEntropyLoss", "TripletLoss")
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"no loss {', '.join(missing)} here (built-in: {', '.join(known)}; a new loss is one "
                         f"registered class, see README 'Extending')")
    return names


def _per_255(value) -> List[float]:
    return [round(float(v) / 255.0, 6) for v in value]


SCHEDULERS = {"MultiStepLR": "WarmupMultiStepLR", "CosineAnnealingLR": "WarmupCosineLR"}
SAMPLERS = {"NaiveIdentitySampler": "PKSampler", "TrainingSampler": "RandomSampler"}
POOLS = {"GlobalAvgPool": "avg", "GlobalMaxPool": "max", "GeneralizedMeanPooling": "gem"}

# fast-reid key -> ours; every key of fast-reid's defaults that has an equivalent here
KEY_MAP: List[Mapping] = [
    Mapping("MODEL.META_ARCHITECTURE", "MODEL.META_ARCHITECTURE", _names({"Baseline": "Baseline"},
                                                                          "meta-architecture")),
    Mapping("MODEL.DEVICE", "MODEL.DEVICE", note="also `auto`, `cpu`"),
    Mapping("MODEL.WEIGHTS", "MODEL.WEIGHTS"),
    Mapping("MODEL.PIXEL_MEAN", "INPUT.PIXEL_MEAN", _per_255, "0..255 there, 0..1 here (divided by 255)"),
    Mapping("MODEL.PIXEL_STD", "INPUT.PIXEL_STD", _per_255, "0..255 there, 0..1 here (divided by 255)"),
    Mapping("MODEL.BACKBONE.NAME", "MODEL.BACKBONE.NAME", _names({"build_resnet_backbone": "build_resnet_backbone"},
                                                                 "backbone")),
    Mapping("MODEL.BACKBONE.DEPTH", "MODEL.BACKBONE.DEPTH"),
    Mapping("MODEL.BACKBONE.LAST_STRIDE", "MODEL.BACKBONE.LAST_STRIDE"),
    Mapping("MODEL.BACKBONE.PRETRAIN", "MODEL.BACKBONE.PRETRAIN"),
    Mapping("MODEL.BACKBONE.PRETRAIN_PATH", "MODEL.BACKBONE.PRETRAIN_PATH",
            note="a local torchvision ImageNet file; when unset with `PRETRAIN True`, the converter writes "
                 "torchvision's cache path (`~/.cache/torch/hub/checkpoints/resnet50-0676ba61.pth` for 50x)"),
    Mapping("MODEL.HEADS.NAME", "MODEL.HEADS.NAME", _names({"EmbeddingHead": "EmbeddingHead"}, "head")),
    Mapping("MODEL.HEADS.NUM_CLASSES", "MODEL.HEADS.NUM_CLASSES", note="0 = from the training set, as there"),
    Mapping("MODEL.HEADS.NECK_FEAT", "MODEL.HEADS.NECK_FEAT"),
    Mapping("MODEL.HEADS.POOL_LAYER", "MODEL.HEADS.POOL_LAYER", _names(POOLS, "pooling"),
            "`GlobalAvgPool` -> `avg`, `GlobalMaxPool` -> `max`, `GeneralizedMeanPooling` -> `gem`"),
    Mapping("MODEL.LOSSES.NAME", "MODEL.LOSSES.NAMES", _loss_names, "`CrossEntropyLoss`, `TripletLoss`"),
    Mapping("MODEL.LOSSES.CE.EPSILON", "MODEL.LOSSES.CE.EPSILON"),
    Mapping("MODEL.LOSSES.CE.SCALE", "MODEL.LOSSES.CE.SCALE"),
    Mapping("MODEL.LOSSES.TRI.MARGIN", "MODEL.LOSSES.TRI.MARGIN", note="0 = soft margin there; here "
            "`MODEL.LOSSES.TRI.SOFT_MARGIN True`"),
    Mapping("MODEL.LOSSES.TRI.NORM_FEAT", "MODEL.LOSSES.TRI.NORM_FEAT"),
    Mapping("MODEL.LOSSES.TRI.SCALE", "MODEL.LOSSES.TRI.SCALE"),
    Mapping("INPUT.SIZE_TRAIN", "INPUT.SIZE_TRAIN"),
    Mapping("INPUT.SIZE_TEST", "INPUT.SIZE_TEST"),
    Mapping("INPUT.FLIP.ENABLED", "INPUT.FLIP.ENABLED"),
    Mapping("INPUT.FLIP.PROB", "INPUT.FLIP.PROB"),
    Mapping("INPUT.PADDING.ENABLED", "INPUT.PADDING.ENABLED"),
    Mapping("INPUT.PADDING.SIZE", "INPUT.PADDING.SIZE"),
    Mapping("INPUT.PADDING.MODE", "INPUT.PADDING.MODE"),
    Mapping("INPUT.REA.ENABLED", "INPUT.REA.ENABLED", note="erased pixels: N(0, 1) noise here, not `INPUT.REA.VALUE`"),
    Mapping("INPUT.REA.PROB", "INPUT.REA.PROB"),
    Mapping("DATASETS.NAMES", "DATASETS.NAMES"),
    Mapping("DATASETS.TESTS", "DATASETS.TESTS"),
    Mapping("DATALOADER.SAMPLER_TRAIN", "DATALOADER.SAMPLER", _names(SAMPLERS, "sampler"),
            "`NaiveIdentitySampler` -> `PKSampler`, `TrainingSampler` -> `RandomSampler`"),
    Mapping("DATALOADER.NUM_INSTANCE", "DATALOADER.NUM_INSTANCE"),
    Mapping("DATALOADER.NUM_WORKERS", "DATALOADER.NUM_WORKERS"),
    Mapping("SOLVER.AMP.ENABLED", "SOLVER.AMP.ENABLED"),
    Mapping("SOLVER.OPT", "SOLVER.OPTIMIZER_NAME", _names({"Adam": "Adam", "AdamW": "AdamW", "SGD": "SGD"},
                                                          "optimizer"), "`Adam`, `AdamW`, `SGD`"),
    Mapping("SOLVER.MAX_EPOCH", "SOLVER.MAX_EPOCHS"),
    Mapping("SOLVER.BASE_LR", "SOLVER.BASE_LR"),
    Mapping("SOLVER.BIAS_LR_FACTOR", "SOLVER.BIAS_LR_FACTOR"),
    Mapping("SOLVER.MOMENTUM", "SOLVER.MOMENTUM"),
    Mapping("SOLVER.NESTEROV", "SOLVER.NESTEROV"),
    Mapping("SOLVER.WEIGHT_DECAY", "SOLVER.WEIGHT_DECAY"),
    Mapping("SOLVER.WEIGHT_DECAY_BIAS", "SOLVER.WEIGHT_DECAY_BIAS"),
    Mapping("SOLVER.IMS_PER_BATCH", "SOLVER.IMS_PER_BATCH", note="global batch in both"),
    Mapping("SOLVER.SCHED", "SOLVER.SCHED.NAME", _names(SCHEDULERS, "schedule"),
            "`MultiStepLR` -> `WarmupMultiStepLR`, `CosineAnnealingLR` -> `WarmupCosineLR`"),
    Mapping("SOLVER.STEPS", "SOLVER.STEPS_EPOCHS", note="epochs in both"),
    Mapping("SOLVER.GAMMA", "SOLVER.GAMMA"),
    Mapping("SOLVER.ETA_MIN_LR", "SOLVER.ETA_MIN_LR"),
    Mapping("SOLVER.WARMUP_FACTOR", "SOLVER.WARMUP_FACTOR"),
    Mapping("SOLVER.WARMUP_METHOD", "SOLVER.WARMUP_METHOD"),
    Mapping("SOLVER.CHECKPOINT_PERIOD", "SOLVER.CHECKPOINT_PERIOD", note="epochs in both"),
    Mapping("TEST.EVAL_PERIOD", "TEST.EVAL_PERIOD", note="epochs in both"),
    Mapping("TEST.IMS_PER_BATCH", "TEST.IMS_PER_BATCH"),
    Mapping("TEST.METRIC", "TEST.METRIC", _names({"cosine": "cosine", "euclidean": "euclidean"}, "metric")),
    Mapping("TEST.ROC.ENABLED", "TEST.ROC.ENABLED"),
    Mapping("TEST.FLIP.ENABLED", "TEST.FLIP.ENABLED"),
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
    "MODEL.BACKBONE.NORM": "BN", "MODEL.BACKBONE.WITH_IBN": False, "MODEL.BACKBONE.WITH_SE": False,
    "MODEL.BACKBONE.WITH_NL": False, "MODEL.HEADS.NORM": "BN", "MODEL.HEADS.WITH_BNNECK": True,
    "MODEL.HEADS.CLS_LAYER": "Linear", "MODEL.HEADS.EMBEDDING_DIM": 0, "MODEL.LOSSES.TRI.HARD_MINING": True,
    "MODEL.FREEZE_LAYERS": [], "SOLVER.FREEZE_ITERS": 0, "SOLVER.DELAY_EPOCHS": 0,
    "DATASETS.COMBINEALL": False, "INPUT.CJ.ENABLED": False, "INPUT.AFFINE.ENABLED": False,
    "INPUT.AUTOAUG.ENABLED": False, "INPUT.AUGMIX.ENABLED": False, "INPUT.CROP.ENABLED": False,
    "INPUT.RPT.ENABLED": False, "TEST.PRECISE_BN.ENABLED": False, "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    "KD.MODEL_CONFIG": [], "MODEL.BACKBONE.FEAT_DIM": None,  # inferred from the backbone here, any value
}

# reasons for fast-reid keys without an equivalent (others: "no such key here")
REASONS: Dict[str, str] = {
    "SOLVER.WARMUP_ITERS": "warmup is in epochs here: set SOLVER.WARMUP_EPOCHS (= WARMUP_ITERS / iterations "
                           "per epoch)",
    "SOLVER.HEADS_LR_FACTOR": "one LR for backbone and heads here (SOLVER.BIAS_LR_FACTOR for biases)",
    "SOLVER.WEIGHT_DECAY_NORM": "norm layers take SOLVER.WEIGHT_DECAY here",
    "INPUT.REA.VALUE": "erased pixels are per-pixel N(0, 1) noise here (the reference's random erasing)",
    "MODEL.LOSSES.CE.ALPHA": "no focal-style CE weighting here",
}


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


def convert_fastreid_config(path: str) -> Tuple[Dict[str, Any], List[Unmapped]]:
    """Map a fast-reid config onto this toolkit's keys.

    Args:
        path: the fast-reid YAML file (its ``_BASE_`` chain is followed).

    Returns:
        (ours, unmapped): ``{our dotted key: value}`` in :data:`KEY_MAP` order, and the keys left
        out with their reasons (keys in :data:`SAME_BEHAVIOUR` holding that value are dropped
        silently: they change nothing).
    """
    theirs = read_fastreid_yaml(path)
    by_key = {m.fastreid: m for m in KEY_MAP}
    ours: Dict[str, Any] = {}
    unmapped: List[Unmapped] = []
    clip = {k: theirs.pop(k) for k in list(theirs) if k.startswith("SOLVER.CLIP_GRADIENTS.")}
    if clip.get("SOLVER.CLIP_GRADIENTS.ENABLED"):
        if clip.get("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm") == "norm" and \
                float(clip.get("SOLVER.CLIP_GRADIENTS.NORM_TYPE", 2.0)) == 2.0:
            ours["SOLVER.CLIP_GRAD_NORM"] = float(clip.get("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 5.0))
        else:
            unmapped.append(Unmapped("SOLVER.CLIP_GRADIENTS", clip, "only L2-norm clipping here "
                                                                     "(SOLVER.CLIP_GRAD_NORM)"))
    for key, value in theirs.items():
        m = by_key.get(key)
        if m is not None:
            try:
                ours[m.ours] = m.convert(value) if m.convert else value
            except ValueError as e:
                unmapped.append(Unmapped(key, value, str(e)))
            continue
        if key in SAME_BEHAVIOUR and (SAME_BEHAVIOUR[key] is None or value == SAME_BEHAVIOUR[key]
                                      or (value in ([], (), "") and SAME_BEHAVIOUR[key] in ([], (), ""))):
            continue
        reason = REASONS.get(key) or (f"only {SAME_BEHAVIOUR[key]!r} here" if key in SAME_BEHAVIOUR
                                      else "no such key here")
        unmapped.append(Unmapped(key, value, reason))
    if ours.get("MODEL.LOSSES.TRI.MARGIN") == 0:  # fast-reid: margin 0 means soft margin
        ours["MODEL.LOSSES.TRI.SOFT_MARGIN"] = True
    depth = ours.get("MODEL.BACKBONE.DEPTH", "50x")
    if ours.get("MODEL.BACKBONE.PRETRAIN") and not ours.get("MODEL.BACKBONE.PRETRAIN_PATH") \
            and depth in RESNET_ARCHS:  # fast-reid downloads ImageNet weights; here: torchvision's local copy
        ours["MODEL.BACKBONE.PRETRAIN_PATH"] = "~/.cache/torch/hub/checkpoints/" + \
            torchvision_weights_file_name(RESNET_ARCHS[depth][1])
    order = {m.ours: i for i, m in enumerate(KEY_MAP)}
    return dict(sorted(ours.items(), key=lambda kv: order.get(kv[0], len(order)))), unmapped


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
