"""Config keys of the CLIP plugin: CLIP backbones (open_clip) and the CLIP-ReID method."""

from .config import CfgNode as CN

__all__ = ["add_clipreid_config"]


def add_clipreid_config(cfg: CN) -> None:
    """Add the CLIP backbone and CLIP-ReID keys to ``cfg`` in place (idempotent).

    Args:
        cfg: a config made by :func:`clipreid_plugin.config.get_cfg` or its defaults.
    """
    if "CLIP" in cfg.MODEL.BACKBONE:
        return
    _C = cfg
    _C.MODEL.BACKBONE.CLIP = CN()
    # open_clip model name ("ViT-B-16", "RN50", "ViT-L-14", ...).
    _C.MODEL.BACKBONE.CLIP.MODEL_NAME = "ViT-B-16"
    # open_clip pretrained tag (e.g. "openai"); needs the network or a filled open_clip cache.
    _C.MODEL.BACKBONE.CLIP.PRETRAINED_TAG = ""
    # Patch-embedding stride (height, width); 12 = overlapping patches ("OLP").
    _C.MODEL.BACKBONE.CLIP.STRIDE_SIZE = [16, 16]
    # Side information embedding added to the class token.
    _C.MODEL.BACKBONE.CLIP.SIE_CAMERA = False
    _C.MODEL.BACKBONE.CLIP.SIE_VIEW = False
    _C.MODEL.BACKBONE.CLIP.SIE_COE = 3.0
    _C.MODEL.BACKBONE.CLIP.GRAD_CHECKPOINTING = False
