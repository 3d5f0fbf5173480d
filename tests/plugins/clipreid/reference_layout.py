"""The reference implementation's checkpoint names (CLIPREID_SPEC.md 2.5 and 7), transcribed.

Written out here, not taken from the plugin's ``REFERENCE_KEY_MAP``, so that the tests can
write a reference-format checkpoint from one of this toolkit's models, and name this toolkit's
tensors after the reference's, with an expectation of their own.
"""

from typing import Dict, Optional

import torch

# (reference prefix, this toolkit's prefix), most specific first. The reference registers the
# CLIP image tower as ``image_encoder``, the two BNNecks as ``bottleneck`` / ``bottleneck_proj``
# with ``classifier`` / ``classifier_proj``, the SIE table as ``cv_embed``, and CLIP-ReID's text
# side as ``prompt_learner`` / ``text_encoder``; this toolkit as ``backbone.visual``, ``neck`` /
# ``neck_proj`` (each ``bn`` + ``classifier``), ``backbone.cv_embed`` and ``text_head.*``.
REFERENCE_NAMES = (
    ("image_encoder.", "backbone.visual."),
    ("cv_embed", "backbone.cv_embed"),
    ("bottleneck_proj.", "neck_proj.bn."),
    ("bottleneck.", "neck.bn."),
    ("classifier_proj.", "neck_proj.classifier."),
    ("classifier.", "neck.classifier."),
    ("prompt_learner.", "text_head.prompt_learner."),
    ("text_encoder.", "text_head.text_encoder."),
)


def our_name(reference_key: str) -> Optional[str]:
    """Returns: this toolkit's name for a reference checkpoint key, or None if it has none here."""
    for ref, ours in REFERENCE_NAMES:
        if reference_key.startswith(ref):
            return ours + reference_key[len(ref):]
    return None


def reference_name(our_key: str) -> Optional[str]:
    """Returns: the reference's name for one of this toolkit's keys, or None if the reference has no such tensor."""
    for ref, ours in REFERENCE_NAMES:
        if our_key.startswith(ours):
            return ref + our_key[len(ours):]
    return None


def reference_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A model's state dict as the reference's training script would save it: reference names,
    and only the tensors the reference saves (not CLIPReID's stage-2 ``text_features`` buffers)."""
    out = {}
    for key, value in state_dict.items():
        name = reference_name(key)
        if name is not None:
            out[name] = value.clone()
    return out
