"""Fixtures of the CLIP-ReID plugin tests: open_clip configs even smaller than the plugin's own.

The plugin's ``ReID-Tiny-ViT-16`` / ``ReID-Tiny-RN`` (see tiny_clip.py) cover most tests; the
configs registered here cover what those two cannot: open_clip's default GELU, a QuickGELU
config flag, and patch 14.
"""

import json

import pytest

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
    """Register the configs above with open_clip (once per session); returns their names."""
    import open_clip

    folder = tmp_path_factory.mktemp("openclip_cfgs")
    for name, cfg in TINY_OPENCLIP_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return list(TINY_OPENCLIP_CONFIGS)


@pytest.fixture(scope="session")
def openai_weights_file(tmp_path_factory):
    """Factory: "vit" | "rn" -> path of a plain OpenAI-format CLIP file of the tiny architecture
    (random weights, fp16 where OpenAI's release files are; see tiny_clip.openai_format_state_dict),
    written once per session."""
    import torch

    from tiny_clip import MODEL_NAMES, openai_format_state_dict

    folder = tmp_path_factory.mktemp("openai_format")
    paths = {}

    def get(kind):
        if kind not in paths:
            path = folder / f"tiny_{kind}_openai_format.pt"
            torch.save(openai_format_state_dict(MODEL_NAMES[kind]), path)
            paths[kind] = str(path)
        return paths[kind]

    return get
