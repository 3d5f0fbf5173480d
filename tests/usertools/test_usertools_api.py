"""The Python API of FeatureExtractor: in-memory inputs (PIL images, uint8 arrays, preprocessed
tensors), from_checkpoint, errors naming type and shape, and the example of docs/TOOLS.md."""

import os
import re

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from clipreid_plugin.usertools import FeatureExtractor

from test_usertools_extract import expected_features
from usertools_cfg import REPO, SIZE


def _checkpoint_with_config(cfg, weights, path):
    """A checkpoint as the trainer writes it: the weights plus the run's config in its metadata."""
    state = torch.load(weights, weights_only=True)
    torch.save({"model": state["model"], "metadata": {"config": cfg.dump()}}, path)
    return str(path)


def _python_blocks(doc):
    with open(os.path.join(REPO, doc), encoding="utf-8") as f:
        return re.findall(r"(<!--[^\n]*-->\n)?```python\n(.*?)```", f.read(), flags=re.S)


def test_array_pil_path_and_tensor_inputs_give_the_features_of_evaluation(checkpoint, image_folder):
    """One image as a file, as a uint8 array, as a PIL image, and preprocessed by torchvision's
    test transform as a (B, 3, H, W) tensor: the same feature, the one evaluation computes."""
    cfg, weights = checkpoint
    ex = FeatureExtractor(cfg, weights)
    paths = [str(image_folder / "a.png"), str(image_folder / "sub" / "c.png")]  # lossless files
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    expected = expected_features(cfg, weights, paths)
    from_paths = ex(paths)
    torch.testing.assert_close(from_paths, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ex(arrays), from_paths, rtol=0, atol=0)  # same batches: same numbers
    torch.testing.assert_close(ex(arrays, batch_size=1), from_paths, rtol=1e-5, atol=1e-5)
    feats, names = ex.embed([Image.fromarray(arrays[1]), arrays[0], paths[1]])
    assert names == ["<PIL image 0>", "<array 1>", paths[1]]
    torch.testing.assert_close(feats, from_paths[[1, 0, 1]], rtol=1e-5, atol=1e-5)
    tf = T.Compose([T.Resize(SIZE, interpolation=T.InterpolationMode(cfg.INPUT.INTERPOLATION_TEST)), T.ToTensor(),
                    T.Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)])
    batch = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
    torch.testing.assert_close(ex(batch), expected, rtol=1e-5, atol=1e-5)
    assert ex(arrays[0]).shape == (1, 512)  # one array alone is one image


def test_from_checkpoint_needs_the_checkpoint_alone(checkpoint, image_folder, tmp_path):
    cfg, weights = checkpoint
    ckpt = _checkpoint_with_config(cfg, weights, tmp_path / "model_final.pth")
    ex = FeatureExtractor.from_checkpoint(ckpt, device="cpu")
    assert ex.device == torch.device("cpu") and tuple(ex.cfg.INPUT.SIZE_TEST) == SIZE
    path = str(image_folder / "e.bmp")
    torch.testing.assert_close(ex([path]), expected_features(cfg, weights, [path]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (np.full((5, 7), 123.456), "input, a numpy.ndarray of shape (5, 7) and dtype float64"),
    ([np.zeros((4, 4, 3), np.uint8), np.full((9, 8, 4), 201, np.uint8)],
     "input 1, a numpy.ndarray of shape (9, 8, 4) and dtype uint8"),
    (torch.full((2, 3, 8), 77.5), "a torch.Tensor of shape (2, 3, 8) and dtype torch.float32"),
    (torch.full((1, 3, 8, 4), 201, dtype=torch.uint8), "a torch.Tensor of shape (1, 3, 8, 4) and dtype torch.uint8"),
    ({"img": 1}, "Cannot embed a dict"),
    ([3.25], "input 0, a float"),
])
def test_unusable_inputs_are_named_by_type_and_shape_never_by_value(checkpoint, bad, message):
    cfg, weights = checkpoint
    with pytest.raises(ValueError) as info:
        FeatureExtractor(cfg, weights).embed(bad)
    text = str(info.value)
    assert message in text, text
    assert not re.search(r"123\.4|77\.5|201|3\.25", text), text  # no value of the input
    assert "\n" not in text


def test_the_python_example_of_the_tools_doc_runs(checkpoint, image_folder, tmp_path, monkeypatch, capsys):
    """The marked block of docs/TOOLS.md, run in a folder holding the files it names: person1.jpg is
    also in the gallery, so the first query's nearest gallery image is that file."""
    cfg, weights = checkpoint
    (tmp_path / "output" / "run").mkdir(parents=True)
    _checkpoint_with_config(cfg, weights, tmp_path / "output" / "run" / "model_final.pth")
    (tmp_path / "my_gallery").mkdir()
    for i, name in enumerate(["a.png", "b.jpg", "sub/c.png", "e.bmp"]):
        Image.open(image_folder / name).save(tmp_path / f"person{i}.png")
        Image.open(image_folder / name).save(tmp_path / "my_gallery" / f"person{i}.png")
    for i in (1, 2, 3):
        os.rename(tmp_path / f"person{i}.png", tmp_path / f"person{i}.jpg")  # PNG data: lossless
    os.rename(tmp_path / "my_gallery" / "person1.png", tmp_path / "my_gallery" / "person1.jpg")
    blocks = [code for marker, code in _python_blocks("docs/TOOLS.md") if "run by tests/usertools" in marker]
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "docs/TOOLS.md", "exec"), namespace)
    assert namespace["query"].shape == (3, 512) and namespace["indices"].shape == (3, 4)
    assert namespace["gallery_paths"][int(namespace["indices"][0, 0])] == os.path.join("my_gallery", "person1.jpg")
    assert namespace["distances"][0, 0].item() == pytest.approx(0.0, abs=1e-5)
    assert "my_gallery/person1.jpg" in capsys.readouterr().out
    assert (tmp_path / "gallery.npz").is_file()


@pytest.mark.parametrize("doc", ["docs/TOOLS.md", "README.md"])
def test_every_python_example_imports_what_exists(doc):
    """The import lines of every Python block of the doc run (the doc once named clipreid_plugin.tools)."""
    for _, code in _python_blocks(doc):
        imports = "\n".join(line for line in code.splitlines() if re.match(r"(from \S+ )?import ", line))
        exec(compile(imports, doc, "exec"), {})
