"""Positional-embedding resizing: patch grids, non-square sources, and the backbone's resize at
build time against torch's own bilinear interpolation (CLIPREID_SPEC.md 2.2)."""

import pytest
import torch
import torch.nn.functional as F

from clipreid_plugin.modeling.backbones.pos_embed import patch_grid, resize_pos_embed
from clipreid_plugin.plugins.clipreid.backbone import build_clip_backbone

from tiny_clip import tiny_clip_cfg

# kind: (key of the embedding in an OpenAI file, source grid, stride, grid at 256x128)
RESIZES = {
    "vit": ("visual.positional_embedding", 14, [12, 12], (21, 10)),  # overlapping patches
    "rn": ("visual.attnpool.positional_embedding", 7, [16, 16], (16, 8)),
}


def test_patch_grid_spec_values():
    """CLIPREID_SPEC.md 2.2: (H - patch) // stride + 1 per side."""
    assert patch_grid((256, 128), 16, (16, 16)) == (16, 8)
    assert patch_grid((256, 128), 16, (12, 12)) == (21, 10)
    assert patch_grid((256, 256), 16, (16, 16)) == (16, 16)
    assert patch_grid((256, 256), 16, (12, 12)) == (21, 21)
    assert patch_grid((256, 128), 14, (14, 14)) == (18, 9)


def test_non_square_source_and_bad_rows():
    """Same grid: the tensor itself; a non-square (16x8) source resizes too, class row kept; a row
    count that does not fit the source grid is explained."""
    pe = torch.randn(1 + 16 * 8, 4)
    assert resize_pos_embed(pe, (16, 8), (16, 8)) is pe
    out = resize_pos_embed(pe, (16, 8), (32, 8))
    assert torch.equal(out[0], pe[0]) and out.shape == (1 + 32 * 8, 4)
    # doubling the rows of a 16x8 grid: bilinear, align_corners=False
    expected = F.interpolate(pe[1:].reshape(1, 16, 8, 4).permute(0, 3, 1, 2), size=(32, 8), mode="bilinear",
                             align_corners=False).permute(0, 2, 3, 1).reshape(32 * 8, 4)
    assert (out[1:] - expected).abs().max().item() <= 1e-6
    with pytest.raises(ValueError, match="129 rows.*14x14"):
        resize_pos_embed(pe, (14, 14), (16, 8))


@pytest.mark.parametrize("kind", ["vit", "rn"])
def test_backbone_resizes_at_build(openai_weights_file, kind):
    """Built for 256x128, the backbone's embedding is the file's, class row kept and the grid
    rows resized bilinearly (align_corners=False) to the patch grid of the input size."""
    key, src, stride, dst = RESIZES[kind]
    path = openai_weights_file(kind)
    pe = torch.load(path, weights_only=True)[key].float()
    cfg = tiny_clip_cfg(kind, size=(256, 128), STRIDE_SIZE=stride)
    cfg.MODEL.BACKBONE.PRETRAIN = True
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = path
    cfg.CLIPREID.BACKBONE.MODEL_NAME = ""  # architecture from the file
    enc = build_clip_backbone(cfg)
    got = (enc.visual.positional_embedding if kind == "vit" else enc.visual.attnpool.positional_embedding).detach()
    width = pe.shape[1]
    grid = pe[1:].reshape(1, src, src, width).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=dst, mode="bilinear", align_corners=False)
    expected = torch.cat([pe[:1], resized.permute(0, 2, 3, 1).reshape(dst[0] * dst[1], width)])
    assert got.shape == (1 + dst[0] * dst[1], width)
    assert (got - expected).abs().max().item() <= 1e-6
