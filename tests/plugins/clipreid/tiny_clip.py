"""Tiny CLIP models built locally (no download, no ../shared): configs, batches, weight files.

The plugin ships two open_clip model configs for this, as the demo uses them
(``clipreid_plugin/plugins/clipreid/model_configs/*.json``, registered with open_clip when a
CLIP model is first built):

* ``ReID-Tiny-ViT-16``: ViT, width 128 (2 heads of 64), 4 layers, patch 16, 224 input
  (14x14 grid), embed dim 64;
* ``ReID-Tiny-RN``: ModifiedResNet, layers 1-1-1-1, width 16 (stem conv1 8 channels, output
  16 x 32 = 512 channels), attention pool 7x7+1 positions, embed dim 64.

Both have a 2-layer text tower of width 64 (1 head) with CLIP's 49408-token vocabulary and 77
positions, and QuickGELU. Built with ``MODEL.BACKBONE.PRETRAIN False`` they are random.
"""

import warnings
from typing import Dict

import torch
from torch import nn

from clipreid_plugin.config import get_cfg

TINY_VIT = "ReID-Tiny-ViT-16"
TINY_RN = "ReID-Tiny-RN"
MODEL_NAMES = {"vit": TINY_VIT, "rn": TINY_RN}
# widths of the towers (see the module doc): (feature, projected)
WIDTHS = {"vit": (128, 64), "rn": (512, 64)}
SIZE = (64, 32)  # (height, width) of the test images: a 4x2 patch grid for the ViT


def tiny_clip_cfg(kind: str = "vit", meta_arch: str = "", num_classes: int = 0, size=SIZE, **clip_keys):
    """get_cfg(["clipreid_plugin.plugins.clipreid"]) for a randomly initialised tiny CLIP backbone on the CPU.

    Args:
        kind: "vit" (ReID-Tiny-ViT-16) or "rn" (ReID-Tiny-RN).
        meta_arch: MODEL.META_ARCHITECTURE ("" keeps the default).
        num_classes: MODEL.HEADS.NUM_CLASSES.
        size: INPUT.SIZE_TRAIN and INPUT.SIZE_TEST.
        clip_keys: CLIPREID.BACKBONE.* values (e.g. ``SIE_CAMERA=True``).
    """
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    cfg.MODEL.DEVICE = "cpu"
    if meta_arch:
        cfg.MODEL.META_ARCHITECTURE = meta_arch
    cfg.MODEL.BACKBONE.NAME = "build_clip_backbone"
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.CLIPREID.BACKBONE.MODEL_NAME = MODEL_NAMES[kind]
    cfg.MODEL.HEADS.NUM_CLASSES = num_classes
    cfg.INPUT.SIZE_TRAIN = list(size)
    cfg.INPUT.SIZE_TEST = list(size)
    for key, value in clip_keys.items():
        cfg.CLIPREID.BACKBONE[key] = value
    return cfg


def random_batch(n: int = 6, size=SIZE, seed: int = 0) -> Dict[str, object]:
    """A training batch as the loaders give it: n images, identities 0,0,1,1,2,2,..., cameras 0,1,0,1,..."""
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(n, 3, *size, generator=g), "targets": torch.arange(n) // 2,
            "camids": torch.arange(n) % 2, "viewids": torch.zeros(n, dtype=torch.long), "img_paths": [""] * n}


def openai_format_state_dict(model_name: str, seed: int = 0) -> Dict[str, torch.Tensor]:
    """What an OpenAI CLIP release file holds, for a tiny architecture: random weights.

    open_clip's built-in CLIP keeps OpenAI's parameter names (``visual.conv1.weight``,
    ``transformer.resblocks.N.*``, ``token_embedding.weight``, ``text_projection``, ...), and
    ``convert_weights_to_lp`` casts the same tensors to float16 as OpenAI's ``convert_weights``
    (conv / linear / attention weights and biases, ``text_projection``, ``visual.proj``); layer
    norms and embeddings stay float32, as in OpenAI's files.
    """
    import open_clip

    from clipreid_plugin.plugins.clipreid.clip_weights import register_toolkit_model_configs

    register_toolkit_model_configs()
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model(model_name)
    open_clip.model.convert_weights_to_lp(model, torch.float16)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_torchscript_archive(sd: Dict[str, torch.Tensor], path) -> None:
    """Save a TorchScript archive whose state dict is ``sd`` (the container of OpenAI's release
    files: ``torch.jit.load(path).state_dict()``), plus the non-weight entries those carry."""

    class Holder(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    root = Holder()
    for key, value in sd.items():
        *parents, leaf = key.split(".")
        module = root
        for p in parents:
            if not hasattr(module, p):
                module.add_module(p, Holder())
            module = getattr(module, p)
        module.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
    root.register_buffer("input_resolution", torch.tensor(224))
    root.register_buffer("context_length", torch.tensor(77))
    root.register_buffer("vocab_size", torch.tensor(49408))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(root), str(path))


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| in float64, after checking the shapes."""
    assert tuple(a.shape) == tuple(b.shape), (tuple(a.shape), tuple(b.shape))
    return (a.detach().double() - b.detach().double()).abs().max().item()
