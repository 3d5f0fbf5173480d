"""Fixtures of the CLIP backbone tests: reference cases, models built from them, tiny open_clip configs."""

import copy
import json
import os

import pytest
import torch

from clipreid_plugin.plugins.clipreid import convert_reference_state_dict
from parity_harness.case_replay import parity_cfg
from clipreid_plugin.plugins.clipreid.clip_baseline import CLIPBaseline

# Tiny open_clip model configs (registered once per session) so that open_clip-format files and
# random init can be tested without the 150M-parameter built-in models.
TINY_OPENCLIP_CONFIGS = {
    # GELU (open_clip's default activation), patch 16
    "cliptest-vit": {"embed_dim": 16, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
                     "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1}},
    # QuickGELU in the config, as open_clip's "-quickgelu" models
    "cliptest-vit-quickgelu": {"embed_dim": 16, "quick_gelu": True,
                               "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
                               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1,
                                            "layers": 1}},
    # patch 14 like ViT-L-14: the patch grid must follow the real patch size
    "cliptest-vit-p14": {"embed_dim": 16, "vision_cfg": {"image_size": 56, "layers": 2, "width": 64, "patch_size": 14},
                         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1,
                                      "layers": 1}},
}


@pytest.fixture(scope="session")
def tiny_openclip_names(tmp_path_factory):
    """Register the tiny open_clip configs; returns their names."""
    import open_clip

    folder = tmp_path_factory.mktemp("openclip_cfgs")
    for name, cfg in TINY_OPENCLIP_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return list(TINY_OPENCLIP_CONFIGS)


def _load_case(reference_dir, name):
    path = os.path.join(reference_dir, name)
    if not os.path.isfile(path):
        pytest.skip(f"reference case {path} not found")
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="session")
def vit_case(reference_dir):
    """case_vit_person.pt: reference ViT CLIP-ReID model, inputs and outputs."""
    return _load_case(reference_dir, "case_vit_person.pt")


@pytest.fixture(scope="session")
def rn_case(reference_dir):
    """case_rn_person.pt: reference RN50-style CLIP-ReID model, inputs and outputs."""
    return _load_case(reference_dir, "case_rn_person.pt")


def case_cfg(case, reference_dir):
    """The case's reference config in this toolkit's keys (the parity tool's translation), for
    the image side only: the CLIP baseline (CLIP-ReID's text side is tested in tests/clipreid)."""
    cfg = parity_cfg(case["meta"], os.path.join(reference_dir, case["meta"]["tiny_clip_file"]))
    cfg.MODEL.META_ARCHITECTURE = "CLIPBaseline"
    cfg.MODEL.LOSSES.NAMES = ("CrossEntropyLoss", "TripletLoss")
    return cfg


@pytest.fixture(scope="session")
def _case_models():
    return {}


@pytest.fixture
def case_model(reference_dir, _case_models):
    """Factory: case -> (CLIPBaseline with the case's reference weights, unmatched reference keys).

    Each case is built once per session; every call returns a fresh deep copy (tests change
    modes, gradients and BN statistics).
    """

    def build(case):
        key = case["meta"]["case"]
        if key not in _case_models:
            model = CLIPBaseline(case_cfg(case, reference_dir))
            new_sd, unmatched = convert_reference_state_dict(case["state_dict"], model)
            missing = model.load_state_dict(new_sd, strict=False).missing_keys
            assert missing == [], f"model keys not covered by the reference checkpoint: {missing}"
            _case_models[key] = (model, unmatched)
        model, unmatched = _case_models[key]
        return copy.deepcopy(model), list(unmatched)

    return build


@pytest.fixture
def make_case_cfg(reference_dir):
    """Factory: case -> config with the case's reference values (see :func:`case_cfg`)."""
    return lambda case: case_cfg(case, reference_dir)
