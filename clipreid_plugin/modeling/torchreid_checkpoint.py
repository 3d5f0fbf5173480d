"""torchreid OSNet checkpoints (KaiyangZhou/deep-person-reid) -> this toolkit's models.

torchreid saves ``{"state_dict": model.state_dict(), "epoch": ..., "optimizer": ...}`` (keys
``module.``-prefixed when trained under DataParallel; the loader strips that prefix), and its
model-zoo files are plain state dicts. An OSNet's names are flat: the backbone's children
(``conv1`` ... ``conv5``, OSNet-AIN's ``pool2`` / ``pool3``) and the head's ``fc`` and
``classifier``. Here the backbone (:class:`~clipreid_plugin.modeling.backbones.OSNetBackbone`)
and the head (:class:`~clipreid_plugin.modeling.heads.TorchreidHead`) keep those names below
their own paths, so :func:`to_model_key` only prefixes a name with the path of the module that
holds it. It is the one place that rewrites a torchreid name; the parity replay fills its models
through it too.

:func:`convert_torchreid_checkpoint` is registered in ``CHECKPOINT_CONVERTERS``, so
``MODEL.WEIGHTS`` takes torchreid files. One that does not fit the configured model (another
backbone, OSNet vs OSNet-AIN, another width, another number of classes) fails in one line naming
the key to set.
"""

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from clipreid_plugin.utils.checkpoint import CHECKPOINT_CONVERTERS, CheckpointError, strip_module_prefix

from .backbones.osnet import OSNET_WIDTHS, OSNetBackbone
from .heads.torchreid_head import TorchreidHead

__all__ = ["TORCHREID_FORMAT", "is_torchreid_osnet_state_dict", "torchreid_prefixes", "to_model_key",
           "convert_torchreid_state_dict", "convert_torchreid_checkpoint"]

TORCHREID_FORMAT = "torchreid OSNet"

# tensors every torchreid OSNet (and OSNet-AIN) state dict has, and no other checkpoint read here
_OSNET_MARKERS = ("conv1.conv.weight", "conv5.conv.weight")
_HEAD_CHILDREN = ("fc", "classifier")


def is_torchreid_osnet_state_dict(sd: Dict[str, torch.Tensor]) -> bool:
    """Whether ``sd`` is a torchreid OSNet / OSNet-AIN state dict (``module.`` prefixes allowed)."""
    keys = {str(k).removeprefix("module.") for k in sd}
    return all(m in keys for m in _OSNET_MARKERS)


def _path_of(model: nn.Module, kind: type) -> Optional[str]:
    for path, module in model.named_modules():
        if isinstance(module, kind):
            return f"{path}." if path else ""
    return None


def torchreid_prefixes(model: nn.Module) -> Tuple[Optional[str], Optional[str]]:
    """Returns: (path prefix of the model's OSNet backbone, of its TorchreidHead); None where absent."""
    return _path_of(model, OSNetBackbone), _path_of(model, TorchreidHead)


def to_model_key(prefixes: Tuple[Optional[str], Optional[str]], key: str) -> Optional[str]:
    """The model's name of torchreid tensor ``key``, or None when the model has no module to hold it.

    Args:
        prefixes: :func:`torchreid_prefixes` of the model.
        key: a torchreid OSNet state-dict name (no ``module.`` prefix).

    Returns:
        ``<head path>fc.0.weight`` for the head's tensors, ``<backbone path><key>`` for the others.
    """
    backbone, head = prefixes
    prefix = head if key.split(".", 1)[0] in _HEAD_CHILDREN else backbone
    return None if prefix is None else prefix + key


def _architecture_problem(sd: Dict[str, torch.Tensor], backbone: Optional[OSNetBackbone]) -> str:
    """What makes the file's OSNet another architecture than ``backbone`` ("" when it fits)."""
    file_ain = "pool2.0.conv.weight" in sd
    width = int(sd["conv1.conv.weight"].shape[0])
    file_depth = next((d for d, w in OSNET_WIDTHS.items() if w[0] == width), f"{width} stem channels")
    if backbone is None:
        return (f"it holds an OSNet{'-AIN' if file_ain else ''} {file_depth}, but the config builds no OSNet: set "
                f"MODEL.BACKBONE.NAME build_osnet_backbone (configs/Market1501/osnet_{'ain_' if file_ain else ''}"
                f"x1_0.yml)")
    if file_ain != backbone.with_ain:
        return (f"it holds an OSNet{'-AIN' if file_ain else ''}, the config builds {backbone.describe()}: set "
                f"MODEL.BACKBONE.WITH_AIN {file_ain}")
    if file_depth != backbone.depth:
        return f"it holds an OSNet {file_depth}, the config builds {backbone.describe()}: set MODEL.BACKBONE.DEPTH " \
               f"{file_depth}"
    return ""


def convert_torchreid_state_dict(sd: Dict[str, torch.Tensor], model: nn.Module
                                 ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a torchreid OSNet state dict to ``model``'s names, checking that it is the same architecture.

    Args:
        sd: the torchreid state dict.
        model: the model to load into (its OSNet backbone and TorchreidHead are found by type).

    Returns:
        (new_sd, unmatched): the tensors under the model's names, and the torchreid keys with no
        counterpart (``fc.*`` / ``classifier.*`` when the model has another head).

    Raises:
        CheckpointError: another backbone, OSNet vs OSNet-AIN, another width, or a classifier of
            another number of classes (one line naming the key to set).
    """
    sd = strip_module_prefix(sd)
    prefixes = torchreid_prefixes(model)
    backbone = None if prefixes[0] is None else model.get_submodule(prefixes[0][:-1])  # "" = the model itself
    problem = _architecture_problem(sd, backbone)
    if problem:
        raise CheckpointError(f"This torchreid checkpoint does not fit the model: {problem}.")
    own = model.state_dict()
    new_sd: Dict[str, torch.Tensor] = {}
    unmatched: List[str] = []
    for key, value in sd.items():
        target = to_model_key(prefixes, key)
        if target is None or target not in own:
            unmatched.append(key)
            continue
        if key.startswith("classifier.") and tuple(own[target].shape) != tuple(value.shape):
            raise CheckpointError(
                f"This torchreid checkpoint's classifier has {value.shape[0]} classes, the model's {own[target].shape[0]} "
                f"(MODEL.HEADS.NUM_CLASSES, filled from the training set): to evaluate it, set MODEL.HEADS.NUM_CLASSES "
                f"{value.shape[0]}.")
        new_sd[target] = value
    return new_sd, unmatched


@CHECKPOINT_CONVERTERS.register()
def convert_torchreid_checkpoint(sd: Dict[str, torch.Tensor], model: nn.Module) -> Optional[tuple]:
    """Checkpoint converter: a torchreid OSNet state dict (see :func:`is_torchreid_osnet_state_dict`).

    Returns:
        None when ``sd`` is not one; else (converted state dict, "torchreid OSNet", unmatched keys).
    """
    if not is_torchreid_osnet_state_dict(sd):
        return None
    new_sd, unmatched = convert_torchreid_state_dict(sd, model)
    return new_sd, TORCHREID_FORMAT, unmatched
