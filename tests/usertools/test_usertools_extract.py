"""FeatureExtractor, feature files and search (clipreid_plugin.usertools.extract, tools/extract.py, tools/search.py)."""

import json
import os

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from clipreid_plugin.modeling import build_model
from clipreid_plugin.usertools import FeatureExtractor, list_images, load_features, save_features, search
from clipreid_plugin.utils.cli import run_tool

from image_files import png_header_only
from tool_cli import load_tool, run_cli
from usertools_cfg import REPO, SIZE


def expected_features(cfg, weights, paths, flip=False):
    """Independent expectation: torchvision's test transform + the model's eval forward."""
    model = build_model(cfg)
    model.load_state_dict(torch.load(weights, weights_only=True)["model"])
    model.eval()
    tf = T.Compose([T.Resize(SIZE, interpolation=T.InterpolationMode(cfg.INPUT.INTERPOLATION_TEST)), T.ToTensor(),
                    T.Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)])
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        out = model({"images": x})
        if flip:
            out = (out + model({"images": x.flip(3)})) / 2
    return out


def test_list_images_walks_folders_sorted_and_keeps_files_in_order(image_folder):
    paths = list_images([str(image_folder / "e.bmp"), str(image_folder)])
    rel = [os.path.relpath(p, image_folder) for p in paths]
    assert rel == ["e.bmp", "a.png", "b.jpg", "e.bmp", "sub/c.png", "sub/deeper/d.JPG"]


def test_list_images_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No image found under folder .*empty"):
        list_images(str(tmp_path / "empty"))


@pytest.mark.parametrize("flip", [False, True])
def test_embed_folder_equals_model_forward(checkpoint, image_folder, flip):
    cfg, weights = checkpoint
    cfg = cfg.clone()
    cfg.TEST.FLIP.ENABLED = flip
    ex = FeatureExtractor(cfg, weights)  # builds its own model: equal outputs need the weights loaded
    feats, paths = ex.embed(str(image_folder), batch_size=2)
    assert len(paths) == 5 and feats.shape == (5, 512)  # ResNet-18 width
    expected = expected_features(cfg, weights, paths, flip=flip)
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-5)


def test_feature_file_round_trip_and_bad_file(tmp_path):
    feats = torch.randn(3, 4)
    paths = ["x/1.jpg", "x/2.jpg", "ü/3.jpg"]
    save_features(str(tmp_path / "f.npz"), feats, paths)
    f2, p2 = load_features(str(tmp_path / "f.npz"))
    assert torch.equal(f2, feats) and p2 == paths
    np.savez(tmp_path / "other.npz", something=np.zeros(2))
    with pytest.raises(ValueError, match=r"missing array\(s\) \['feats', 'paths'\]"):
        load_features(str(tmp_path / "other.npz"))
    with pytest.raises(ValueError, match="one row per path"):
        save_features(str(tmp_path / "g.npz"), feats, paths[:2])


def test_search_finds_the_planted_neighbours_with_hand_computed_distances():
    rng = np.random.RandomState(1)
    gallery = rng.randn(20, 8).astype(np.float32)
    query = gallery[[3, 11]] + 0.01 * rng.randn(2, 8).astype(np.float32)
    idx, dist = search(query, gallery, topk=4)
    assert idx.shape == (2, 4) and idx[:, 0].tolist() == [3, 11]
    qn = query / np.linalg.norm(query, axis=1, keepdims=True)
    gn = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    full = ((qn[:, None, :] - gn[None, :, :]) ** 2).sum(-1)  # squared Euclidean on unit vectors
    np.testing.assert_array_equal(idx.numpy(), np.argsort(full, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(dist.numpy(), np.take_along_axis(full, idx.numpy(), 1), atol=1e-5)
    _, cos = search(query, gallery, topk=4, metric="cosine")
    np.testing.assert_allclose(cos.numpy(), 1 - np.take_along_axis(qn @ gn.T, idx.numpy(), 1), atol=1e-5)


def test_search_ties_go_to_the_lower_gallery_index_and_topk_is_clipped():
    gallery = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    idx, dist = search(torch.tensor([[1.0, 0.0]]), gallery, topk=10, normalize=False)
    assert idx.tolist() == [[1, 3, 0, 2]] and dist.tolist() == [[0.0, 0.0, 2.0, 2.0]]


def test_search_rejects_features_of_different_models():
    with pytest.raises(ValueError, match="dimension 4 but gallery features 8"):
        search(torch.randn(2, 4), torch.randn(5, 8))


def test_extract_and_search_command_lines(checkpoint, image_folder, tmp_path, capsys):
    cfg, weights = checkpoint
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(cfg.dump())
    gallery = tmp_path / "gallery.npz"
    load_tool("extract").main(["--config-file", str(cfg_file), "--weights", weights, "--input", str(image_folder),
                               "--output", str(gallery), "--num-workers", "0"])
    feats, paths = load_features(str(gallery))
    assert feats.shape[0] == 5
    out_json, strip = tmp_path / "ranks.json", tmp_path / "ranks.png"
    query = str(image_folder / "sub" / "c.png")
    load_tool("search").main(["--gallery", str(gallery), "--query", query, "--config-file", str(cfg_file),
                              "--weights", weights, "--topk", "3", "--output", str(out_json), "--strip", str(strip)])
    ranked = json.loads(out_json.read_text())
    # the query image is in the gallery: it is its own nearest neighbour at distance ~0
    assert ranked[0]["query"] == query and ranked[0]["results"][0]["path"] == query
    assert ranked[0]["results"][0]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert "rank" in capsys.readouterr().out
    with Image.open(strip) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]


def test_search_command_line_error_is_one_line(tmp_path, capsys):
    """In-process through run_tool, what the script's __main__ runs: exit code 2, one line."""
    search_tool = load_tool("search")
    code = run_tool(lambda: search_tool.main(["--gallery", str(tmp_path / "missing.npz"), "--query-feats",
                                              str(tmp_path / "q.npz")]))
    err = capsys.readouterr().err
    assert code == 2 and "missing.npz not found" in err and "Traceback" not in err


def test_extract_sees_a_phone_photo_upright_and_rejects_a_bomb_in_one_line(checkpoint, tmp_path, capsys):
    cfg, weights = checkpoint
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(cfg.dump())
    folder = tmp_path / "photos"
    folder.mkdir()
    upright = np.random.RandomState(1).randint(0, 256, (64, 32, 3), dtype=np.uint8)
    Image.fromarray(upright).save(folder / "a_upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise; "rotate clockwise to display"
    Image.fromarray(np.rot90(upright, k=1).copy()).save(folder / "b_sideways.png", exif=exif)
    out = tmp_path / "f.npz"
    assert run_cli("extract", ["--config-file", cfg_file, "--weights", weights, "--input", folder,
                               "--output", out, "--num-workers", 0]) == 0
    feats, _ = load_features(str(out))
    assert torch.equal(feats[0], feats[1])

    png_header_only(folder / "c_bomb.png", 50000, 50000)
    assert run_cli("extract", ["--config-file", cfg_file, "--weights", weights, "--input", folder,
                               "--output", out, "--num-workers", 0]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "c_bomb.png" in err[0] and "decompression bomb" in err[0]
    assert "SKIP_BAD_IMAGES" not in err[0] and err[0].endswith("Fix or remove the file.")
