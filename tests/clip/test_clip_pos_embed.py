"""Positional-embedding resizing against the reference implementation's tensors (aux_refs.pt)."""

import os

import pytest
import torch

from clipreid_plugin.plugins.clipreid.backbone import build_clip_backbone
from clipreid_plugin.modeling.backbones.pos_embed import patch_grid, resize_pos_embed

SOURCES = {  # kind: (tiny file, key, source grid)
    "vit": ("tiny_clip_vit_openai_format.pt", "visual.positional_embedding", 14),
    "rn": ("tiny_clip_rn50_openai_format.pt", "visual.attnpool.positional_embedding", 7),
}


@pytest.fixture(scope="module")
def aux(reference_dir):
    path = os.path.join(reference_dir, "aux_refs.pt")
    if not os.path.isfile(path):
        pytest.skip(f"{path} not found")
    return torch.load(path, weights_only=True)["outputs"]


@pytest.mark.parametrize("kind", ["vit", "rn"])
@pytest.mark.parametrize("grid", [(16, 8), (21, 10), (16, 16)])
@pytest.mark.parametrize("fp16", [False, True])
def test_resize_matches_reference(reference_dir, aux, kind, grid, fp16):
    fname, key, g = SOURCES[kind]
    pe = torch.load(os.path.join(reference_dir, fname), weights_only=True)[key]
    pe = pe.half() if fp16 else pe.float()
    ref = aux[f"resize_pos_embed_{kind}_{grid[0]}x{grid[1]}" + ("_from_fp16_input" if fp16 else "")]
    out = resize_pos_embed(pe, (g, g), grid)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert (out.float() - ref.float()).abs().max().item() <= 1e-6


def test_patch_grid_spec_values():
    # CLIPREID_SPEC.md 2.2: (H - 16) // s + 1 per side
    assert patch_grid((256, 128), 16, (16, 16)) == (16, 8)
    assert patch_grid((256, 128), 16, (12, 12)) == (21, 10)
    assert patch_grid((256, 256), 16, (16, 16)) == (16, 16)
    assert patch_grid((256, 256), 16, (12, 12)) == (21, 21)
    assert patch_grid((256, 128), 14, (14, 14)) == (18, 9)


def test_non_square_source_and_bad_rows():
    pe = torch.randn(1 + 16 * 8, 4)
    assert resize_pos_embed(pe, (16, 8), (16, 8)) is pe
    # a non-square (16x8) source grid resizes too; the class row is kept as is
    out = resize_pos_embed(pe, (16, 8), (32, 8))
    assert torch.equal(out[0], pe[0]) and out.shape == (1 + 32 * 8, 4)
    with pytest.raises(ValueError, match="129 rows.*14x14"):
        resize_pos_embed(pe, (14, 14), (16, 8))


@pytest.mark.parametrize("kind", ["vit", "rn"])
def test_backbone_resizes_at_build(reference_dir, aux, kind):
    from clipreid_plugin.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.PRETRAIN = True
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = os.path.join(reference_dir, SOURCES[kind][0])
    cfg.MODEL.BACKBONE.CLIP.MODEL_NAME = ""
    cfg.INPUT.SIZE_TRAIN = [256, 128]
    cfg.MODEL.BACKBONE.CLIP.STRIDE_SIZE = [12, 12] if kind == "vit" else [16, 16]
    enc = build_clip_backbone(cfg)
    pe = enc.visual.positional_embedding if kind == "vit" else enc.visual.attnpool.positional_embedding
    ref = aux[f"resize_pos_embed_{kind}_{'21x10' if kind == 'vit' else '16x8'}"]
    assert (pe.detach() - ref).abs().max().item() <= 1e-6
