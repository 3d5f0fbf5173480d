"""Checks shared by the CLIP weight-loading tests (local files and the reference's files)."""

import torch

from clipreid_plugin.plugins.clipreid import load_clip


def activations(model) -> set:
    """Names of the MLP activations a CLIP model uses ({"QuickGELU"}, {"GELU"} or both)."""
    return {type(m).__name__ for m in model.modules() if type(m).__name__ in ("QuickGELU", "GELU")}


def assert_same_weights(model, sd) -> None:
    """The model holds exactly the tensors of ``sd`` (same keys), floats as float32 (an fp16 -> fp32
    up-cast is exact, so equality is exact too)."""
    own = model.state_dict()
    assert set(own) == set(sd)
    for k, v in sd.items():
        assert own[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype), k
        assert torch.equal(own[k], v.to(own[k].dtype)), k


def assert_loads_like_openai_release(path, conv1_channels) -> None:
    """An OpenAI-format file (partly fp16, like OpenAI's release) loads with ``load_clip`` as a
    float32 model in eval mode with QuickGELU (text tower, and the ViT image tower), every tensor
    exactly the file's, and the architecture read from its shapes (``visual.conv1`` channels: the
    ViT width, or a ModifiedResNet's stem width / 2)."""
    sd = torch.load(path, weights_only=True)
    assert any(v.dtype == torch.float16 for v in sd.values())
    model = load_clip(weights=path)
    assert_same_weights(model, sd)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not model.training
    assert activations(model) == {"QuickGELU"}
    assert model.visual.conv1.out_channels == conv1_channels
