"""load_clip: every weight source gives an fp32 model with the right activation and exact weights.

OpenAI-format files (plain state dicts and TorchScript archives, partly fp16 like OpenAI's
release) are written in tmp_path from the tiny architectures (tiny_clip.py); loading the shared
reference's own tiny files is in reference/test_reference_files.py.
"""

import warnings

import pytest
import torch
from torch import nn

from clipreid_plugin.plugins.clipreid import convert_openai_checkpoint, load_clip, read_clip_checkpoint
from clipreid_plugin.utils.checkpoint import CheckpointError

from tiny_clip import write_torchscript_archive
from weights_checks import activations, assert_loads_like_openai_release, assert_same_weights


@pytest.mark.parametrize("kind, conv1_channels", [("vit", 128), ("rn", 16 // 2)])
def test_openai_plain_file_fp32_quickgelu_exact(openai_weights_file, kind, conv1_channels):
    """A plain OpenAI-format file: architecture from the shapes (ViT width 128; ModifiedResNet stem
    conv1 = width / 2), float32 model in eval mode, QuickGELU, every tensor exactly the file's."""
    assert_loads_like_openai_release(openai_weights_file(kind), conv1_channels)


def test_torchscript_archive_loads_like_plain_file(openai_weights_file, tmp_path):
    """OpenAI's container (a TorchScript archive): the same tensors and dtypes as the plain file,
    the archive's non-weight entries dropped, no deprecation warning leaked, and a one-time
    conversion to a plain file that loads with weights_only=True."""
    sd = torch.load(openai_weights_file("vit"), weights_only=True)
    archive = tmp_path / "ViT-tiny.pt"
    write_torchscript_archive(sd, archive)
    read, is_ts = read_clip_checkpoint(str(archive))
    assert is_ts
    assert set(read) == set(sd)  # input_resolution/context_length/vocab_size dropped
    assert all(read[k].dtype == sd[k].dtype and torch.equal(read[k], sd[k]) for k in sd)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the jit.load deprecation is not leaked
        model = load_clip(weights=str(archive))
    assert_same_weights(model, sd)
    assert activations(model) == {"QuickGELU"}

    plain = tmp_path / "converted.pt"
    convert_openai_checkpoint(str(archive), str(plain))
    again = torch.load(plain, weights_only=True)
    assert set(again) == set(sd)
    assert all(again[k].dtype == sd[k].dtype and torch.equal(again[k], sd[k]) for k in sd)


def test_openai_file_checked_against_model_name(openai_weights_file):
    """An OpenAI ViT file under an RN model name is refused, naming both architectures."""
    with pytest.raises(ValueError, match=r"ViT width 128.*'RN50'.*ModifiedResNet"):
        load_clip("RN50", weights=openai_weights_file("vit"))


def test_openclip_checkpoint_uses_config_activation(tiny_openclip_names, tmp_path):
    """An open_clip training checkpoint ({"state_dict"}, DDP "module." prefix) loads exactly, with
    its model config's activation (GELU, or QuickGELU for a -quickgelu config) unless forced."""
    for name, act in [("cliptest-vit", "GELU"), ("cliptest-vit-quickgelu", "QuickGELU")]:
        torch.manual_seed(0)
        src = load_clip(name, quick_gelu=(act == "QuickGELU"))
        sd = {k: v.clone() for k, v in src.state_dict().items()}
        path = tmp_path / f"{name}.pt"
        # open_clip training checkpoint layout: {"state_dict": ...} with DDP's "module." prefix
        torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
        model = load_clip(name, weights=str(path))
        assert_same_weights(model, sd)
        assert activations(model) == {act}
        # the activation can still be forced (an fp32 open_clip-layout copy of OpenAI weights)
        assert activations(load_clip(name, weights=str(path), quick_gelu=True)) == {"QuickGELU"}


def test_random_init_defaults_to_quickgelu(tiny_openclip_names):
    """Random init uses QuickGELU (CLIP-ReID checkpoints are OpenAI-architecture models) unless turned off."""
    assert activations(load_clip("cliptest-vit")) == {"QuickGELU"}
    assert activations(load_clip("cliptest-vit", quick_gelu=False)) == {"GELU"}


def test_pretrained_tag_passes_the_tags_activation(monkeypatch):
    """A pretrained tag is passed to open_clip with the tag's activation ("openai": QuickGELU)."""
    import open_clip

    calls = []
    monkeypatch.setattr(open_clip, "create_model", lambda name, **kw: calls.append((name, kw)) or nn.Linear(1, 1))
    load_clip("ViT-B-16", pretrained_tag="openai")
    load_clip("ViT-B-16", pretrained_tag="laion2b_s34b_b88k")
    assert calls[0][1]["pretrained"] == "openai" and calls[0][1]["force_quick_gelu"] is True
    assert calls[1][1]["pretrained"] == "laion2b_s34b_b88k" and calls[1][1].get("quick_gelu") is False


def test_clear_errors():
    """Missing file, unknown model name, unknown tag and no source at all: each names the fix."""
    with pytest.raises(CheckpointError, match=r"no/such/ViT-B-16\.pt.*PRETRAIN_PATH"):
        load_clip("ViT-B-16", weights="/no/such/ViT-B-16.pt")
    with pytest.raises(ValueError, match=r"Unknown open_clip model name 'ViT-B-61'.*ViT-B-16"):
        load_clip("ViT-B-61")
    with pytest.raises(ValueError, match=r"Unknown pretrained tag 'opneai'.*openai"):
        load_clip("RN50", pretrained_tag="opneai")
    with pytest.raises(ValueError, match="MODEL_NAME"):
        load_clip()


def test_non_weights_file_is_reported(tmp_path):
    """A torch file that is not a state dict of tensors is reported as such."""
    bad = tmp_path / "notes.pt"
    torch.save({"epoch": 3, "lr": [0.1]}, bad)
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        load_clip(weights=str(bad))
