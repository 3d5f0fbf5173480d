"""Checkpoints written by earlier versions of the toolkit, loaded into today's models.

The bag-of-tricks head (``EmbeddingHead``) took fast-reid's layout and names (so that fast-reid's
model-zoo files load as they are): its BNNeck moved from ``heads.neck.bn.*`` to
``heads.bottleneck.0.*`` and its classifier from ``heads.neck.classifier.weight`` to
``heads.weight``. This converter renames those tensors, so a checkpoint trained before keeps
evaluating, extracting and resuming. (Its config is upgraded by
:mod:`clipreid_plugin.config.upgrade`.)
"""

from typing import Dict, Optional

import torch
from torch import nn

from clipreid_plugin.utils.checkpoint import CHECKPOINT_CONVERTERS

__all__ = ["LEGACY_HEAD_KEYS", "convert_legacy_head_checkpoint"]

LEGACY_FORMAT = "earlier clipreid_plugin"
# (old prefix or name, today's), relative to the model
LEGACY_HEAD_KEYS = (("heads.neck.bn.", "heads.bottleneck.0."), ("heads.neck.classifier.weight", "heads.weight"))


@CHECKPOINT_CONVERTERS.register()
def convert_legacy_head_checkpoint(sd: Dict[str, torch.Tensor], model: nn.Module) -> Optional[tuple]:
    """Checkpoint converter: rename the old ``EmbeddingHead`` tensors when the model has today's.

    Returns:
        None when ``sd`` has none of the old names or the model still uses them; else
        (renamed state dict, format name, []).
    """
    own = model.state_dict()
    if not any(k.startswith("heads.neck.") for k in sd) or "heads.bottleneck.0.weight" not in own:
        return None
    renamed = {}
    for key, value in sd.items():
        for old, new in LEGACY_HEAD_KEYS:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        renamed[key] = value
    return renamed, LEGACY_FORMAT, []
