"""Positional-embedding resizing: patch grids, non-square sources, and the backbone's resize at
build time (CLIPREID_SPEC.md 2.2), against hand values and a float64 NumPy bilinear resize built
from the align_corners=False definition (not torch's kernel)."""

import numpy as np
import pytest
import torch

from clipreid_plugin.modeling.backbones.pos_embed import patch_grid, resize_pos_embed
from clipreid_plugin.plugins.clipreid.backbone import build_clip_backbone

from tiny_clip import tiny_clip_cfg

# kind: (key of the embedding in an OpenAI file, source grid, stride, grid at 256x128)
RESIZES = {
    "vit": ("visual.positional_embedding", 14, [12, 12], (21, 10)),  # overlapping patches
    "rn": ("visual.attnpool.positional_embedding", 7, [16, 16], (16, 8)),
}


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear interpolation, align_corners=False: output i samples the
    input at x = (i + 0.5) n_in / n_out - 0.5, clamped to [0, n_in - 1], from its two neighbours."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
        lo = int(np.floor(x))
        hi = min(lo + 1, n_in - 1)
        m[i, lo] += 1.0 - (x - lo)
        m[i, hi] += x - lo
    return m


def resized_grid(rows: torch.Tensor, src, dst) -> np.ndarray:
    """The (src_h * src_w, C) grid rows resized to dst: separable, rows then columns, in float64."""
    grid = rows.double().numpy().reshape(src[0], src[1], -1)
    out = np.einsum("ih,hwc->iwc", bilinear_matrix(src[0], dst[0]), grid)
    out = np.einsum("jw,iwc->ijc", bilinear_matrix(src[1], dst[1]), out)
    return out.reshape(dst[0] * dst[1], -1)


def test_bilinear_matrix_hand_values():
    """2 -> 4 samples at x = -0.25, 0.25, 0.75, 1.25: [a, 0.75a + 0.25b, 0.25a + 0.75b, b] (the ends
    clamped); 3 -> 3 is the identity."""
    assert np.allclose(bilinear_matrix(2, 4), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    assert np.allclose(bilinear_matrix(3, 3), np.eye(3))


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
    # doubling the rows of a 16x8 grid, float64 reference
    assert np.abs(out[1:].double().numpy() - resized_grid(pe[1:], (16, 8), (32, 8))).max() <= 1e-6
    # by hand: a 2x1 grid [0, 4] (one channel) to 4x1 gives [0, 1, 3, 4]; the class row stays
    tiny = torch.tensor([[7.0], [0.0], [4.0]])
    assert resize_pos_embed(tiny, (2, 1), (4, 1)).flatten().tolist() == [7.0, 0.0, 1.0, 3.0, 4.0]
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
    assert got.shape == (1 + dst[0] * dst[1], width)
    assert torch.equal(got[0], pe[0])  # the class row is kept
    assert np.abs(got[1:].double().numpy() - resized_grid(pe[1:], (src, src), dst)).max() <= 1e-6
