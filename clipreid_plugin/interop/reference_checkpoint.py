"""Checkpoints of the reference CLIP-ReID implementation (Syliz517/CLIP-ReID) -> this toolkit.

The reference saves ``model.state_dict()`` as is (e.g. ``ViT-B-16_60.pth``): keys
``image_encoder.*``, ``classifier.weight``, ``classifier_proj.weight``, ``bottleneck*.``,
optional ``cv_embed``, ``prompt_learner.*`` / ``text_encoder.*`` for CLIP-ReID, and a
``module.`` prefix when it was trained under DataParallel (spec section 7). Each
meta-architecture declares how those names map onto its own in ``REFERENCE_KEY_MAP``.
"""

from typing import Dict, List, Tuple

import torch
from torch import nn

__all__ = ["is_reference_state_dict", "convert_reference_state_dict"]


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def is_reference_state_dict(sd: Dict[str, torch.Tensor]) -> bool:
    """Whether ``sd`` is a reference CLIP-ReID / CLIP-baseline checkpoint.

    Args:
        sd: a loaded state dict.

    Returns:
        True when it holds the reference's ``image_encoder.*`` keys (``module.`` allowed).
    """
    return isinstance(sd, dict) and any(_strip_module(str(k)).startswith("image_encoder.") for k in sd)


def _likely_cause(ref_key: str) -> str:
    if ref_key.startswith("classifier"):
        return ("number of classes: the checkpoint was trained on another dataset or split "
                "(MODEL.HEADS.NUM_CLASSES / DATASETS.NAMES); load it for evaluation only, or drop the classifier")
    if "positional_embedding" in ref_key:
        return ("image size or stride: the positional embedding is sized by INPUT.SIZE_TRAIN and "
                "MODEL.BACKBONE.CLIP.STRIDE_SIZE; set them to the values the checkpoint was trained with "
                "(129 rows = 256x128 stride 16, 211 = 256x128 stride 12, 257 = 256x256 stride 16)")
    if ref_key == "cv_embed":
        return ("SIE table: MODEL.BACKBONE.CLIP.SIE_CAMERA/SIE_VIEW and NUM_CAMERAS/NUM_VIEWS must match the "
                "checkpoint's training set")
    return "a different architecture (MODEL.BACKBONE.CLIP.MODEL_NAME)"


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
        ValueError: the model declares no REFERENCE_KEY_MAP, or a key maps onto a tensor of
            another shape (the message names the key, both shapes and the likely cause).
    """
    key_map = getattr(type(model), "REFERENCE_KEY_MAP", None)
    if not key_map:
        raise ValueError(f"{type(model).__name__} cannot load reference CLIP-ReID checkpoints (it has no "
                         f"REFERENCE_KEY_MAP); use MODEL.META_ARCHITECTURE CLIPBaseline or CLIPReID.")
    own = model.state_dict()
    new_sd: Dict[str, torch.Tensor] = {}
    unmatched: List[str] = []
    for raw_key, value in sd.items():
        key = _strip_module(raw_key)
        target = None
        for ref_prefix, our_prefix in key_map:
            if key.startswith(ref_prefix):
                target = our_prefix + key[len(ref_prefix):]
                break
        if target is None or target not in own:
            unmatched.append(key)
            continue
        if tuple(own[target].shape) != tuple(value.shape):
            raise ValueError(
                f"Checkpoint key {key!r} has shape {tuple(value.shape)} but the model's {target!r} has "
                f"{tuple(own[target].shape)}. Likely cause: {_likely_cause(key)}."
            )
        new_sd[target] = value
    return new_sd, unmatched
