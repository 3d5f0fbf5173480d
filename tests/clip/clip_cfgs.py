"""Configs of the CLIP tests: the tiny OpenAI-format ViT of ../shared/reference as the backbone."""

import os

from clipreid_plugin.config import get_cfg


def tiny_vit_cfg(reference_dir, **clip_keys):
    """get_cfg() with build_clip_backbone on the tiny ViT weights; ``clip_keys`` set MODEL.BACKBONE.CLIP.*."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_clip_backbone"
    cfg.MODEL.BACKBONE.PRETRAIN = True
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = os.path.join(reference_dir, "tiny_clip_vit_openai_format.pt")
    cfg.MODEL.BACKBONE.CLIP.MODEL_NAME = ""  # architecture from the file's shapes
    for k, v in clip_keys.items():
        cfg.MODEL.BACKBONE.CLIP[k] = v
    return cfg
