"""ONNX export of the embedding model (clipreid_plugin.usertools.export, tools/export_onnx.py)."""

import sys

import numpy as np
import pytest
import torch

from clipreid_plugin.modeling import build_model
from clipreid_plugin.usertools.export import check_onnx, export_onnx

from usertools_cfg import SIZE, tiny_cfg
from tool_cli import load_tool


def ort_or_skip():
    return pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'clipreid_plugin[onnx]')")


def test_resnet_export_matches_pytorch_with_dynamic_batch(checkpoint, tmp_path):
    """The ResNet-18 model exports; onnxruntime matches the eval forward at another batch size."""
    ort = ort_or_skip()
    cfg, weights = checkpoint
    model = build_model(cfg)
    model.load_state_dict(torch.load(weights, weights_only=True)["model"])
    path = str(tmp_path / "r18.onnx")
    wrapper = export_onnx(model, path, SIZE)
    assert wrapper.input_names == ["images"]
    assert check_onnx(path, wrapper, SIZE, batch_size=3) <= 1e-4
    # independent of the wrapper: the plain eval forward on 5 images (export used 2)
    x = torch.randn(5, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.eval()({"images": x}).numpy()
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["embedding"], {"images": x.numpy()})[0]
    assert got.shape == (5, 512) and np.abs(got - expected).max() <= 1e-4


def test_clip_sie_export_takes_camera_ids(tmp_path):
    """A CLIP baseline with camera SIE (the plugin's tiny ViT, random init) exports with a camera-id
    input and flip averaging; onnxruntime gives the PyTorch embedding, and the ids change it."""
    ort = ort_or_skip()
    cfg = tiny_cfg(**{"PLUGINS": "['clipreid_plugin.plugins.clipreid']", "MODEL.META_ARCHITECTURE": "CLIPBaseline", "MODEL.BACKBONE.NAME": "build_clip_backbone",
                      "MODEL.BACKBONE.PRETRAIN": False, "CLIPREID.BACKBONE.MODEL_NAME": "ReID-Tiny-ViT-16",
                      "CLIPREID.BACKBONE.SIE_CAMERA": True,
                      "CLIPREID.BACKBONE.NUM_CAMERAS": 3, "CLIPREID.BACKBONE.NUM_VIEWS": 1,
                      "INPUT.SIZE_TEST": [64, 32], "INPUT.SIZE_TRAIN": [64, 32]})
    torch.manual_seed(0)
    model = build_model(cfg)
    path = str(tmp_path / "clip.onnx")
    wrapper = export_onnx(model, path, SIZE, flip=True)  # open_clip attention + SIE + flip averaging
    assert wrapper.input_names == ["images", "camids"]
    x = torch.randn(3, 3, *SIZE, generator=torch.Generator().manual_seed(2))
    cams = torch.tensor([0, 2, 1])
    with torch.no_grad():
        model.eval()
        batch = {"images": x, "camids": cams}
        expected = ((model(batch) + model(dict(batch, images=x.flip(3)))) / 2).numpy()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(["embedding"], {"images": x.numpy(), "camids": cams.numpy()})[0]
    assert np.abs(got - expected).max() <= 1e-4
    other = sess.run(["embedding"], {"images": x.numpy(), "camids": np.zeros(3, np.int64)})[0]
    assert np.abs(other - got).max() > 1e-3  # the camera input reaches the graph


def test_export_command_line(checkpoint, tmp_path, capsys):
    """tools/export_onnx.py writes the file and reports the check against PyTorch."""
    ort_or_skip()
    cfg, weights = checkpoint
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(cfg.dump())
    out = tmp_path / "m.onnx"
    load_tool("export_onnx").main(["--config-file", str(cfg_file), "--weights", weights, "--output", str(out)])
    assert out.is_file() and "max abs difference" in capsys.readouterr().out


def test_check_without_onnxruntime_says_what_to_install(checkpoint, tmp_path, monkeypatch):
    """Without onnxruntime the check names the extra to install."""
    cfg, _ = checkpoint
    path = str(tmp_path / "m.onnx")
    wrapper = export_onnx(build_model(cfg), path, SIZE)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'clipreid_plugin\[onnx\]'"):
        check_onnx(path, wrapper, SIZE)


@pytest.mark.parametrize("missing, flags", [("onnx", []), ("onnx", ["--no-check"]), ("onnxruntime", [])])
def test_export_tool_without_the_extra_is_one_line_before_any_work(missing, flags, tmp_path, monkeypatch, capsys):
    """The tool names the [onnx] extra before loading anything: the weights file does not even exist."""
    from clipreid_plugin.utils.cli import run_tool

    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    tool = load_tool("export_onnx")
    code = run_tool(lambda: tool.main(["--weights", str(tmp_path / "absent.pth"), "--output",
                                       str(tmp_path / "m.onnx")] + flags))
    err = capsys.readouterr().err
    assert code == 2 and f"needs {missing}, which is not installed" in err, err
    assert "pip install 'clipreid_plugin[onnx]'" in err and "absent.pth" not in err and "Traceback" not in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 2  # the message + the debug hint
    assert not (tmp_path / "m.onnx").exists()
