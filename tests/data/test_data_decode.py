"""Image decoding (clipreid_plugin.data.decode): each kind of file PIL writes is decoded to the
8-bit RGB array worked out by hand; decompression bombs are one-line errors, skipped by
DATASETS.SKIP_BAD_IMAGES in training."""

import numpy as np
import pytest
from PIL import Image

from clipreid_plugin.data.image_dataset import ReIDImageDataset, SKIP_ADVICE, drop_unreadable
from clipreid_plugin.data.datasets.bases import DatasetError
from clipreid_plugin.data.decode import read_image, to_rgb, upright_size
from clipreid_plugin.data.transforms import ReIDTransform
from image_files import png_header_only

R, G, B, W, K = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def decoded(path):
    img = read_image(str(path))
    assert img.mode == "RGB"
    return np.asarray(img)


def grey(*rows):
    """RGB array of grey levels."""
    a = np.array(rows, dtype=np.uint8)
    return np.repeat(a[..., None], 3, axis=2)


def test_exif_orientation_is_applied(tmp_path):
    # 2 rows x 3 columns; orientation 6 = "rotate 90 degrees clockwise to display"
    arr = np.array([[R, G, B], [W, K, (9, 9, 9)]], dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.png"
    Image.fromarray(arr).save(path, exif=exif)
    # clockwise: the bottom row becomes the left column, read from top to bottom
    expected = np.array([[W, R], [K, G], [(9, 9, 9), B]], dtype=np.uint8)
    assert np.array_equal(decoded(path), expected)
    assert upright_size(str(path)) == (2, 3)  # (width, height) as displayed


def test_16_bit_grey_is_scaled_not_saturated(tmp_path):
    v = np.array([[0, 257, 1000], [32768, 65535, 40000]], dtype=np.uint16)
    # round(v * 255 / 65535): 0, 1, 3.89 -> 4, 127.5 -> 128, 255, 155.64 -> 156
    expected = grey([0, 1, 4], [128, 255, 156])
    path = tmp_path / "depth.png"
    Image.fromarray(v).save(path)
    assert Image.open(path).mode in ("I;16", "I")  # as PIL opens a 16-bit PNG (version-dependent)
    assert np.array_equal(decoded(path), expected)
    big_endian = Image.fromarray(v.astype(">u2"))
    assert big_endian.mode == "I;16B"
    assert np.array_equal(np.asarray(to_rgb(big_endian)), expected)
    # 32-bit "I": read as 16-bit, clipped to 0..65535
    wide = Image.fromarray(np.array([[-5, 70000, 257]], dtype=np.int32))
    assert wide.mode == "I" and np.array_equal(np.asarray(to_rgb(wide)), grey([0, 255, 1]))


def test_palette_with_and_without_transparency(tmp_path):
    img = Image.fromarray(np.array([[0, 1, 2]], dtype=np.uint8), mode="P")
    img.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 - 3) * 3)
    img.save(tmp_path / "p.png")
    assert np.array_equal(decoded(tmp_path / "p.png"), np.array([[R, G, (10, 20, 30)]], dtype=np.uint8))
    img.save(tmp_path / "pt.png", transparency=1)  # colour 1 is transparent: black
    assert np.array_equal(decoded(tmp_path / "pt.png"), np.array([[R, K, (10, 20, 30)]], dtype=np.uint8))


def test_alpha_is_composited_over_black(tmp_path):
    rgba = np.array([[(200, 100, 50, 128), (10, 20, 30, 255), (255, 255, 255, 0)]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    # round(c * a / 255): 200*128/255 = 100.39, 100*128/255 = 50.2, 50*128/255 = 25.1
    assert np.array_equal(decoded(tmp_path / "rgba.png"),
                          np.array([[(100, 50, 25), (10, 20, 30), K]], dtype=np.uint8))
    la = np.array([[(200, 128), (77, 255), (255, 0)]], dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert np.array_equal(decoded(tmp_path / "la.png"), grey([100, 77, 0]))


def test_cmyk_is_multiplicative(tmp_path):
    cmyk = np.array([[(0, 0, 0, 0), (255, 0, 0, 0), (128, 64, 0, 128), (0, 0, 0, 255)]], dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "print.tif")
    # R = (255-C)(255-K)/255: (127*127)/255 = 63.25 -> 63, G = 191*127/255 = 95.1 -> 95, B = 255*127/255 = 127
    assert np.array_equal(decoded(tmp_path / "print.tif"),
                          np.array([[W, (0, 255, 255), (63, 95, 127), K]], dtype=np.uint8))


def test_grey_and_one_bit(tmp_path):
    Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), "L").save(tmp_path / "l.png")
    assert np.array_equal(decoded(tmp_path / "l.png"), grey([0, 77, 255]))
    Image.fromarray(np.array([[True, False, True]])).save(tmp_path / "bw.png")
    assert Image.open(tmp_path / "bw.png").mode == "1"
    assert np.array_equal(decoded(tmp_path / "bw.png"), grey([255, 0, 255]))


def test_rgb_is_unchanged_and_the_transform_uses_the_same_conversion(tmp_path):
    arr = np.random.RandomState(0).randint(0, 256, (6, 4, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "rgb.png")
    assert np.array_equal(decoded(tmp_path / "rgb.png"), arr)
    # an in-memory 16-bit image given to the transform (FeatureExtractor's PIL input) is scaled too
    t = ReIDTransform((2, 3), "nearest", [0, 0, 0], [1, 1, 1])
    sixteen = Image.fromarray(np.full((2, 3), 65535, dtype=np.uint16))
    assert np.array_equal(t.prepare(sixteen), np.full((2, 3, 3), 255, dtype=np.uint8))


@pytest.mark.parametrize("side", [50000, 10000])  # past PIL's error limit; past its warning limit only
def test_decompression_bombs_are_one_line_errors(tmp_path, side):
    path = tmp_path / "bomb.png"
    png_header_only(path, side, side)
    with pytest.raises(DatasetError) as e:
        read_image(str(path))
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "decompression bomb" in msg
    assert msg.endswith("Fix or remove the file.") and "SKIP_BAD_IMAGES" not in msg


def test_training_advice_names_skip_bad_images_and_skipping_drops_bombs(tmp_path):
    bomb, good = tmp_path / "bomb.png", tmp_path / "good.png"
    png_header_only(bomb, 50000, 50000)
    Image.fromarray(np.zeros((4, 2, 3), dtype=np.uint8)).save(good)
    samples = [(str(bomb), 0, 0, 0), (str(good), 1, 0, 0)]
    assert drop_unreadable(samples, "test") == [samples[1]]
    ds = ReIDImageDataset(samples, ReIDTransform((4, 2), "nearest", [0, 0, 0], [1, 1, 1]), bad_image_advice=SKIP_ADVICE)
    with pytest.raises(DatasetError, match="DATASETS.SKIP_BAD_IMAGES True"):
        ds[0]
    with pytest.raises(DatasetError) as e:  # a dataset of the user tools: no training key in the advice
        ReIDImageDataset(samples, ReIDTransform((4, 2), "nearest", [0, 0, 0], [1, 1, 1]))[0]
    assert "SKIP_BAD_IMAGES" not in str(e.value)
