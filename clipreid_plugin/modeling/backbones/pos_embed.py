"""Positional-embedding resizing for transformer towers on non-square ReID inputs.

TransReID and CLIP-ReID resize a pretrained (square) grid of positional embeddings bilinearly,
without antialiasing, to the patch grid of a 256x128 (or any) input. open_clip's own
``resize_pos_embed`` assumes a square source grid and uses bicubic with antialiasing
(PITFALLS 5), so this module does it the reference way and accepts any (h, w) source grid.
Shared by the torchvision ViT backbone and the CLIP-ReID plugin's CLIP towers.
"""

from typing import Tuple

import torch
import torch.nn.functional as F

from clipreid_plugin.utils.errors import ConfigError

__all__ = ["patch_grid", "resize_pos_embed"]


def patch_grid(image_size: Tuple[int, int], patch_size: int, stride: Tuple[int, int]) -> Tuple[int, int]:
    """Number of patch rows and columns a conv patch embedding produces.

    ``(H - patch) // stride + 1`` per side (floor): the reference's formula, e.g. 16x8 for
    256x128 with stride 16 and 21x10 with stride 12 (the right-most columns are not covered).

    Args:
        image_size: (H, W) of the input images.
        patch_size: conv kernel size (16 for ViT-B/16).
        stride: conv stride (sh, sw); smaller than the patch = overlapping patches.

    Returns:
        (rows, cols).
    """
    h, w = image_size
    if h < patch_size or w < patch_size:
        raise ConfigError(f"Input size {h}x{w} is smaller than the patch size {patch_size} (INPUT.SIZE_TRAIN).")
    return (h - patch_size) // stride[0] + 1, (w - patch_size) // stride[1] + 1


def resize_pos_embed(pos_embed: torch.Tensor, src_grid: Tuple[int, int], dst_grid: Tuple[int, int]) -> torch.Tensor:
    """Resize a [class; grid] positional embedding bilinearly (align_corners=False), class row kept.

    The computation runs in the tensor's own dtype, as the reference does on the loaded
    checkpoint tensor.

    Args:
        pos_embed: (1 + sh*sw, D), rows of the grid in row-major (height-first) order.
        src_grid: (sh, sw) grid the rows describe.
        dst_grid: (th, tw) wanted grid.

    Returns:
        (1 + th*tw, D) tensor, same dtype and device; ``pos_embed`` itself when the grids match.
    """
    n, d = pos_embed.shape
    if n != 1 + src_grid[0] * src_grid[1]:
        raise ValueError(f"Positional embedding has {n} rows; a {src_grid[0]}x{src_grid[1]} grid needs "
                         f"{1 + src_grid[0] * src_grid[1]} (one class row + the grid).")
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    cls, grid = pos_embed[:1], pos_embed[1:]
    grid = grid.reshape(1, src_grid[0], src_grid[1], d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(dst_grid), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(dst_grid[0] * dst_grid[1], d)
    return torch.cat([cls, grid], dim=0)
