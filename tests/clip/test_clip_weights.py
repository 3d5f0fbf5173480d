"""load_clip: every weight source gives an fp32 model with the right activation and exact weights."""

import os
import warnings

import pytest
import torch
from torch import nn

from clipreid_plugin.plugins.clipreid import convert_openai_checkpoint, load_clip, read_clip_checkpoint
from clipreid_plugin.utils.checkpoint import CheckpointError

TINY = {"vit": "tiny_clip_vit_openai_format.pt", "rn": "tiny_clip_rn50_openai_format.pt"}


def _acts(model):
    return {type(m).__name__ for m in model.modules() if type(m).__name__ in ("QuickGELU", "GELU")}


def _assert_same_weights(model, sd):
    own = model.state_dict()
    assert set(own) == set(sd)
    for k, v in sd.items():
        assert own[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype), k
        assert torch.equal(own[k], v.to(own[k].dtype)), k  # fp16 -> fp32 up-cast is exact


def _write_torchscript_archive(sd, path):
    """A TorchScript archive whose state dict is ``sd`` (same layout as OpenAI's release files)."""

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
    # OpenAI's archives carry these non-weight entries too.
    root.register_buffer("input_resolution", torch.tensor(224))
    root.register_buffer("context_length", torch.tensor(77))
    root.register_buffer("vocab_size", torch.tensor(49408))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(root), str(path))


@pytest.mark.parametrize("kind", ["vit", "rn"])
def test_openai_plain_file_fp32_quickgelu_exact(reference_dir, kind):
    path = os.path.join(reference_dir, TINY[kind])
    sd = torch.load(path, weights_only=True)
    assert any(v.dtype == torch.float16 for v in sd.values())  # like OpenAI's release
    model = load_clip(weights=path)
    _assert_same_weights(model, sd)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not model.training
    assert _acts(model) == {"QuickGELU"}  # text tower (and ViT image tower) use QuickGELU
    assert model.visual.conv1.out_channels == (128 if kind == "vit" else 8 // 2)


def test_torchscript_archive_loads_like_plain_file(reference_dir, tmp_path):
    path = os.path.join(reference_dir, TINY["vit"])
    sd = torch.load(path, weights_only=True)
    archive = tmp_path / "ViT-tiny.pt"
    _write_torchscript_archive(sd, archive)
    read, is_ts = read_clip_checkpoint(str(archive))
    assert is_ts
    assert set(read) == set(sd)  # input_resolution/context_length/vocab_size dropped
    assert all(read[k].dtype == sd[k].dtype and torch.equal(read[k], sd[k]) for k in sd)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the jit.load deprecation is not leaked
        model = load_clip(weights=str(archive))
    _assert_same_weights(model, sd)
    assert _acts(model) == {"QuickGELU"}

    # converted once to a plain file that loads with weights_only=True, same tensors and dtypes
    plain = tmp_path / "converted.pt"
    convert_openai_checkpoint(str(archive), str(plain))
    again = torch.load(plain, weights_only=True)
    assert all(again[k].dtype == sd[k].dtype and torch.equal(again[k], sd[k]) for k in sd)


def test_openai_file_checked_against_model_name(reference_dir):
    path = os.path.join(reference_dir, TINY["vit"])
    with pytest.raises(ValueError, match=r"ViT width 128.*'RN50'.*ModifiedResNet"):
        load_clip("RN50", weights=path)


def test_openclip_checkpoint_uses_config_activation(tiny_openclip_names, tmp_path):
    for name, act in [("cliptest-vit", "GELU"), ("cliptest-vit-quickgelu", "QuickGELU")]:
        torch.manual_seed(0)
        src = load_clip(name, quick_gelu=(act == "QuickGELU"))
        sd = {k: v.clone() for k, v in src.state_dict().items()}
        path = tmp_path / f"{name}.pt"
        # open_clip training checkpoint layout: {"state_dict": ...} with DDP's "module." prefix
        torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
        model = load_clip(name, weights=str(path))
        _assert_same_weights(model, sd)
        assert _acts(model) == {act}
        # the activation can still be forced (an fp32 open_clip-layout copy of OpenAI weights)
        assert _acts(load_clip(name, weights=str(path), quick_gelu=True)) == {"QuickGELU"}


def test_random_init_defaults_to_quickgelu(tiny_openclip_names):
    assert _acts(load_clip("cliptest-vit")) == {"QuickGELU"}
    assert _acts(load_clip("cliptest-vit", quick_gelu=False)) == {"GELU"}


def test_pretrained_tag_passes_the_tags_activation(monkeypatch):
    import open_clip

    calls = []
    monkeypatch.setattr(open_clip, "create_model", lambda name, **kw: calls.append((name, kw)) or nn.Linear(1, 1))
    load_clip("ViT-B-16", pretrained_tag="openai")
    load_clip("ViT-B-16", pretrained_tag="laion2b_s34b_b88k")
    assert calls[0][1]["pretrained"] == "openai" and calls[0][1]["force_quick_gelu"] is True
    assert calls[1][1]["pretrained"] == "laion2b_s34b_b88k" and calls[1][1].get("quick_gelu") is False


def test_clear_errors():
    with pytest.raises(CheckpointError, match=r"no/such/ViT-B-16\.pt.*PRETRAIN_PATH"):
        load_clip("ViT-B-16", weights="/no/such/ViT-B-16.pt")
    with pytest.raises(ValueError, match=r"Unknown open_clip model name 'ViT-B-61'.*ViT-B-16"):
        load_clip("ViT-B-61")
    with pytest.raises(ValueError, match=r"Unknown pretrained tag 'opneai'.*openai"):
        load_clip("RN50", pretrained_tag="opneai")
    with pytest.raises(ValueError, match="MODEL_NAME"):
        load_clip()


def test_non_weights_file_is_reported(tmp_path):
    bad = tmp_path / "notes.pt"
    torch.save({"epoch": 3, "lr": [0.1]}, bad)
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        load_clip(weights=str(bad))
