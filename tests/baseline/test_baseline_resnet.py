"""ResNet backbone (fast-reid layout): output maps, last stride, torchvision weights, and errors."""

import logging

import pytest
import torch
import torchvision

from clipreid_plugin.config import get_cfg
from clipreid_plugin.modeling.backbones import build_backbone
from clipreid_plugin.modeling.backbones.resnet import RESNET_ARCHS, ResNetBackbone
from clipreid_plugin.utils.checkpoint import CheckpointError


def _cfg(depth="18x", last_stride=1, pretrain=False, path=""):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.DEPTH = depth
    cfg.MODEL.BACKBONE.LAST_STRIDE = last_stride
    cfg.MODEL.BACKBONE.PRETRAIN = pretrain
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = path
    return cfg


def _torchvision_features(net, x):
    """torchvision's own forward up to layer4 (the independent expectation)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def test_last_stride_doubles_the_output_map():
    x = torch.randn(2, 3, 64, 32)
    b1 = build_backbone(_cfg(last_stride=1)).eval()
    b2 = build_backbone(_cfg(last_stride=2)).eval()
    assert b1.out_features == 512
    with torch.no_grad():
        assert b1(x).feature.shape == (2, 512, 4, 2)
        assert b2(x).feature.shape == (2, 512, 2, 1)


@pytest.mark.parametrize("depth, ctor", [("18x", "resnet18"), ("50x_32x4d", "resnext50_32x4d")])
def test_torchvision_weights_load_by_name_and_give_torchvision_blocks(tmp_path, depth, ctor):
    """Every torchvision tensor loads under its own name; the blocks compute torchvision's. The one
    layout difference is fast-reid's stem pool (3x3 stride 2, ceil_mode, no padding; torchvision pads
    by 1), so the expectation is torchvision's network with that pool."""
    torch.manual_seed(0)
    net = getattr(torchvision.models, ctor)(weights=None).eval()
    path = tmp_path / "weights.pth"
    torch.save(net.state_dict(), path)
    backbone = build_backbone(_cfg(depth, last_stride=2, pretrain=True, path=str(path))).eval()
    net.maxpool = torch.nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x).feature, _torchvision_features(net, x), rtol=0, atol=0)


def test_stem_pool_is_fastreids_not_torchvisions():
    pool = ResNetBackbone("18x").maxpool
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 0, True)


def test_pretrained_load_reports_the_unused_classifier(tmp_path, caplog):
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    from clipreid_plugin.modeling.backbones.resnet import load_pretrained_resnet

    backbone = ResNetBackbone("18x", 1)
    with caplog.at_level(logging.WARNING):
        report = load_pretrained_resnet(backbone, str(path), "18x")
    assert report["missing"] == [] and report["mismatched"] == []
    assert sorted(report["unexpected"]) == ["fc.bias", "fc.weight"]
    assert "fc.weight" in caplog.text
    torch.testing.assert_close(backbone.layer4[1].conv2.weight, net.layer4[1].conv2.weight)


def test_wide_and_grouped_variants_build():
    b = ResNetBackbone("50x_32x4d", 1)
    assert b.out_features == 2048 and b.layer1[0].conv2.groups == 32
    assert b.layer4[0].conv2.stride == (1, 1) and b.layer4[0].downsample[0].stride == (1, 1)
    for depth, (ctor, weights) in RESNET_ARCHS.items():  # every listed depth maps to torchvision
        assert callable(getattr(torchvision.models, ctor)) and hasattr(torchvision.models, weights), depth


def test_bad_settings_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"DEPTH '51x'.*18x, 34x, 50x"):
        build_backbone(_cfg("51x"))
    with pytest.raises(ValueError, match="LAST_STRIDE"):
        build_backbone(_cfg(last_stride=3))
    with pytest.raises(ValueError, match="PRETRAIN_PATH is empty.*resnet18-f37072fd.pth"):
        build_backbone(_cfg(pretrain=True))
    with pytest.raises(FileNotFoundError, match=r"does not exist.*hub.*resnet50-0676ba61\.pth"):
        build_backbone(_cfg("50x", pretrain=True, path=str(tmp_path / "missing.pth")))
    # weights of another depth: a ResNet-50 file (bottleneck shapes) into a ResNet-18
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"DEPTH '18x'.*another depth"):
        build_backbone(_cfg("18x", pretrain=True, path=str(path)))
