"""Fixtures of the user-tool tests: a saved checkpoint of the tiny ResNet-18, small images."""

import numpy as np
import pytest
import torch
from PIL import Image

from usertools_cfg import tiny_cfg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A randomly initialised tiny model saved as this project's checkpoint: (cfg, path)."""
    from clipreid_plugin.modeling import build_model

    torch.manual_seed(123)
    cfg = tiny_cfg()
    model = build_model(cfg)
    # give the BNNeck non-trivial statistics so a missed weight load would show
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("ckpt") / "model_final.pth"
    torch.save({"model": model.state_dict()}, path)
    return cfg, str(path)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Five random RGB images of different sizes in a nested folder, plus a non-image file."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.RandomState(0)
    names = ["b.jpg", "a.png", "sub/c.png", "sub/deeper/d.JPG", "e.bmp"]
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = rng.randint(0, 256, size=(40 + 10 * i, 20 + 5 * i, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path)
    (root / "notes.txt").write_text("not an image")
    return root
