"""Checkpoints of the reference CLIP-ReID implementation (Syliz517/CLIP-ReID) -> this toolkit.

The reference saves ``model.state_dict()`` as is (e.g. ``ViT-B-16_60.pth``): keys
``image_encoder.*``, ``classifier.weight``, ``classifier_proj.weight``, ``bottleneck*.``,
optional ``cv_embed``, ``prompt_learner.*`` / ``text_encoder.*`` for CLIP-ReID, and a
``module.`` prefix when it was trained under DataParallel (spec section 7). Each
meta-architecture declares how those names map onto its own in ``REFERENCE_KEY_MAP``; the two
functions :func:`to_model_key` / :func:`to_reference_key` are the one place that rewrites a
name either way.

:func:`convert_reference_checkpoint` is registered in the toolkit's ``CHECKPOINT_CONVERTERS``,
so ``MODEL.WEIGHTS`` accepts reference files wherever the toolkit loads weights.
"""

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from clipreid_plugin.utils.checkpoint import CHECKPOINT_CONVERTERS, CheckpointError, strip_module_prefix

__all__ = ["is_reference_state_dict", "to_model_key", "to_reference_key", "convert_reference_state_dict",
           "convert_reference_checkpoint"]


# Tensors of CLIPReID that the reference does not store: the frozen text features stage 1 ends
# with (a loaded reference model has none until stage 1 runs or they are computed).
_DERIVED_KEYS = ("text_head.text_features", "text_head.text_features_ready")


def is_reference_state_dict(sd: Dict[str, torch.Tensor]) -> bool:
    """Whether ``sd`` is a reference CLIP-ReID / CLIP-baseline checkpoint.

    Args:
        sd: a loaded state dict.

    Returns:
        True when it holds the reference's ``image_encoder.*`` keys (``module.`` allowed).
    """
    return isinstance(sd, dict) and any(str(k).removeprefix("module.").startswith("image_encoder.") for k in sd)


def _key_map(model: nn.Module) -> List[Tuple[str, str]]:
    key_map = getattr(type(model), "REFERENCE_KEY_MAP", None)
    if not key_map:
        raise CheckpointError(f"{type(model).__name__} cannot load reference CLIP-ReID checkpoints (it has no "
                              f"REFERENCE_KEY_MAP); use MODEL.META_ARCHITECTURE CLIPBaseline or CLIPReID.")
    return key_map


def to_model_key(model: nn.Module, ref_key: str) -> Optional[str]:
    """Returns: the model's name for reference key ``ref_key`` (first matching prefix), or None."""
    for ref_prefix, our_prefix in _key_map(model):
        if ref_key.startswith(ref_prefix):
            return our_prefix + ref_key[len(ref_prefix):]
    return None


def to_reference_key(model: nn.Module, our_key: str) -> str:
    """Returns: the reference's name for the model's key ``our_key`` (unchanged if no prefix matches)."""
    for ref_prefix, our_prefix in _key_map(model):
        if our_key.startswith(our_prefix):
            return ref_prefix + our_key[len(our_prefix):]
    return our_key


def _likely_cause(ref_key: str) -> str:
    if ref_key.startswith("classifier"):
        return ("number of classes: the checkpoint was trained on another dataset or split "
                "(MODEL.HEADS.NUM_CLASSES / DATASETS.NAMES); load it for evaluation only, or drop the classifier")
    if "positional_embedding" in ref_key:
        return ("image size or stride: the positional embedding is sized by INPUT.SIZE_TRAIN and "
                "CLIPREID.BACKBONE.STRIDE_SIZE; set them to the values the checkpoint was trained with "
                "(129 rows = 256x128 stride 16, 211 = 256x128 stride 12, 257 = 256x256 stride 16)")
    if ref_key == "cv_embed":
        return ("SIE table: CLIPREID.BACKBONE.SIE_CAMERA/SIE_VIEW and NUM_CAMERAS/NUM_VIEWS must match the "
                "checkpoint's training set")
    return "a different architecture (CLIPREID.BACKBONE.MODEL_NAME)"


def convert_reference_state_dict(sd: Dict[str, torch.Tensor], model: nn.Module
                                 ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a reference checkpoint's keys to ``model``'s names, checking shapes.

    Uses ``type(model).REFERENCE_KEY_MAP`` (ordered ``(reference_prefix, our_prefix)`` pairs,
    first match wins); a ``module.`` prefix is removed first.

    Args:
        sd: the reference state dict.
        model: the model to load into (its ``state_dict()`` gives the target names/shapes).

    Returns:
        (new_sd, unmatched): tensors under the model's names, and the reference keys that have
        no counterpart in the model (e.g. ``cv_embed`` without SIE, text keys in a baseline).
        Model keys absent from the file are not listed here (``load_state_dict(strict=False)``
        reports them).

    Raises:
        CheckpointError: the model declares no REFERENCE_KEY_MAP, or a key maps onto a tensor
            of another shape (the message names the key, both shapes and the likely cause).
    """
    own = model.state_dict()
    new_sd: Dict[str, torch.Tensor] = {}
    unmatched: List[str] = []
    for key, value in strip_module_prefix(sd).items():
        target = to_model_key(model, key)
        if target is None or target not in own:
            unmatched.append(key)
            continue
        if tuple(own[target].shape) != tuple(value.shape):
            raise CheckpointError(
                f"Checkpoint key {key!r} has shape {tuple(value.shape)} but the model's {target!r} has "
                f"{tuple(own[target].shape)}. Likely cause: {_likely_cause(key)}."
            )
        new_sd[target] = value
    return new_sd, unmatched


@CHECKPOINT_CONVERTERS.register()
def convert_reference_checkpoint(sd: Dict[str, torch.Tensor], model: nn.Module):
    """Checkpoint converter: a reference CLIP-ReID state dict for a model with a REFERENCE_KEY_MAP.

    Returns:
        None when ``sd`` is not a reference file or the model cannot take one; else
        (converted state dict, "reference CLIP-ReID", unmatched reference keys).
    """
    if not is_reference_state_dict(sd) or not hasattr(type(model), "REFERENCE_KEY_MAP"):
        return None
    new_sd, unmatched = convert_reference_state_dict(sd, model)
    own = model.state_dict()
    for key in _DERIVED_KEYS:  # computed by this toolkit after stage 1: the reference never saves them
        if key in own and key not in new_sd:
            new_sd[key] = own[key]
    return new_sd, "reference CLIP-ReID", unmatched
