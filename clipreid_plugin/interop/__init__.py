"""Weight interop: OpenAI / open_clip CLIP weights and the reference CLIP-ReID checkpoints."""

from .clip_weights import (
    convert_openai_checkpoint,
    infer_openai_model_config,
    is_openai_state_dict,
    load_clip,
    read_clip_checkpoint,
)
from .reference_checkpoint import convert_reference_state_dict, is_reference_state_dict

__all__ = [
    "load_clip",
    "read_clip_checkpoint",
    "is_openai_state_dict",
    "infer_openai_model_config",
    "convert_openai_checkpoint",
    "is_reference_state_dict",
    "convert_reference_state_dict",
]
