"""The reference's own files: its tiny OpenAI-format CLIP weights load as OpenAI's release files
do, and positional embeddings resize exactly as the reference resized them (aux_refs.pt)."""

import os

import pytest
import torch

from clipreid_plugin.modeling.backbones.pos_embed import resize_pos_embed

from weights_checks import assert_loads_like_openai_release

# kind: (tiny weights file, key of the embedding, source grid, ViT width or RN stem conv1 channels)
TINY = {
    "vit": ("tiny_clip_vit_openai_format.pt", "visual.positional_embedding", 14, 128),
    "rn": ("tiny_clip_rn50_openai_format.pt", "visual.attnpool.positional_embedding", 7, 8 // 2),
}


def _tiny_file(reference_dir, kind):
    path = os.path.join(reference_dir, TINY[kind][0])
    if not os.path.isfile(path):
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def aux(reference_dir):
    """aux_refs.pt's outputs: the reference's resized positional embeddings."""
    path = os.path.join(reference_dir, "aux_refs.pt")
    if not os.path.isfile(path):
        pytest.skip(f"{path} not found")
    return torch.load(path, weights_only=True)["outputs"]


@pytest.mark.parametrize("kind", ["vit", "rn"])
def test_shared_tiny_openai_files_load(reference_dir, kind):
    """README: a loader that accepts OpenAI's release files must accept these unchanged: float32
    model in eval mode, QuickGELU, every tensor exactly the file's (fp16 ones up-cast)."""
    assert_loads_like_openai_release(_tiny_file(reference_dir, kind), TINY[kind][3])


@pytest.mark.parametrize("kind", ["vit", "rn"])
def test_resize_matches_reference(reference_dir, aux, kind):
    """Each patch grid the reference resized to (16x8, 21x10, 16x16), from an fp32 and an fp16
    embedding: same dtype and shape, values within 1e-6."""
    _, key, g, _ = TINY[kind]
    pe32 = torch.load(_tiny_file(reference_dir, kind), weights_only=True)[key].float()
    misses = []
    for grid in [(16, 8), (21, 10), (16, 16)]:
        for fp16 in (False, True):
            ref = aux[f"resize_pos_embed_{kind}_{grid[0]}x{grid[1]}" + ("_from_fp16_input" if fp16 else "")]
            out = resize_pos_embed(pe32.half() if fp16 else pe32, (g, g), grid)
            assert out.dtype == ref.dtype and out.shape == ref.shape, (grid, fp16)
            err = (out.float() - ref.float()).abs().max().item()
            if not err <= 1e-6:
                misses.append(f"{grid} fp16={fp16}: {err:.3g}")
    assert not misses, misses
