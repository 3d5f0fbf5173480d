"""fast-reid's ResNet and ResNeSt: built from a config or plain arguments, layouts, options and errors.

Their arithmetic is checked against fast-reid's own tensors in tests/peers/test_fastreid_backbones.py.
"""

import pytest
import torch
from torch import nn

from clipreid_plugin.config import get_cfg
from clipreid_plugin.modeling.backbones import BACKBONE_REGISTRY, ResNeStBackbone, ResNetBackbone, build_backbone
from clipreid_plugin.modeling.backbones.non_local import NonLocal
from clipreid_plugin.modeling.backbones.se import SELayer
from clipreid_plugin.utils.errors import ConfigError


def _cfg(**backbone):
    cfg = get_cfg()
    for k, v in backbone.items():
        setattr(cfg.MODEL.BACKBONE, k, v)
    return cfg


def test_built_from_a_config_or_plain_arguments_alike():
    torch.manual_seed(0)
    a = build_backbone(_cfg(DEPTH="18x", WITH_IBN=True, LAST_STRIDE=2))
    torch.manual_seed(0)
    b = BACKBONE_REGISTRY.get("build_resnet_backbone")(depth="18x", with_ibn=True, last_stride=2)
    assert isinstance(a, ResNetBackbone) and a.describe() == b.describe() == "ResNet-18-IBN-a"
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    with torch.device("meta"):  # shapes only
        s = build_backbone(_cfg(NAME="build_resnest_backbone", DEPTH="50x"))
        assert isinstance(ResNeStBackbone(_cfg(DEPTH="101x")), ResNeStBackbone)  # the class takes a config too
    assert isinstance(s, ResNeStBackbone) and s.describe() == "ResNeSt-50" and s.out_features == 2048


def test_ibn_a_is_in_layer1_to_3_only():
    b = ResNetBackbone("50x", with_ibn=True)
    for stage in (b.layer1, b.layer2, b.layer3):
        assert all(isinstance(block.bn1.IN, nn.InstanceNorm2d) for block in stage)
        assert stage[0].bn1.IN.num_features == stage[0].bn1.BN.num_features == stage[0].conv1.out_channels // 2
    assert all(isinstance(block.bn1, nn.BatchNorm2d) for block in b.layer4)


@pytest.mark.parametrize("depth, stage2, stage3", [("50x", [2, 3], [3, 4, 5]), ("101x", [2, 3], list(range(14, 23)))])
def test_non_local_blocks_follow_the_last_blocks_of_layer2_and_layer3(depth, stage2, stage3):
    with torch.device("meta"):
        b = ResNetBackbone(depth, with_nl=True)
    assert b.nl_positions == [[], stage2, stage3, []]
    assert len(b.NL_2) == len(stage2) and len(b.NL_3) == len(stage3) and not hasattr(b, "NL_1")
    assert b.NL_2[0].g.out_channels == 1 and b.NL_3[0].W[0].in_channels == 1  # fast-reid's one channel
    with torch.device("meta"):
        half = ResNetBackbone(depth, with_nl=True, nl_half_channels=True)
    assert half.NL_2[0].g.out_channels == 256 and half.NL_3[0].theta.out_channels == 512


def test_non_local_block_starts_as_identity_and_averages_over_positions():
    torch.manual_seed(0)
    block = NonLocal(4, inter_channels=1).eval()
    x = torch.randn(2, 4, 3, 5)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)  # W's norm starts at weight 0, bias 0
    # with unit 1x1 convs of weight 1 on channel 0 only (no bias), y at every position is
    # mean_j(x0_i * x0_j * x0_j) = x0_i * mean(x0^2); W maps it back to channel 0 with weight 1
    for conv in (block.g, block.theta, block.phi):
        nn.init.zeros_(conv.weight), nn.init.zeros_(conv.bias)
        conv.weight.data[0, 0] = 1.0
    nn.init.zeros_(block.W[0].weight), nn.init.zeros_(block.W[0].bias)
    block.W[0].weight.data[0, 0] = 1.0
    block.W[1] = nn.Identity()
    expected = x.clone()
    expected[:, 0] += x[:, 0] * (x[:, 0] ** 2).mean(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(block(x), expected)


def test_squeeze_excitation_with_zero_weights_halves_the_map():
    se = SELayer(32)
    for m in se.fc:
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
    x = torch.randn(2, 32, 3, 3)
    torch.testing.assert_close(se(x), x * 0.5)  # sigmoid(0) = 1/2
    b = ResNetBackbone("18x", with_se=True)
    assert b.layer1[0].se.fc[0].weight.shape == (4, 64) and "layer4.1.se.fc.2.weight" in b.state_dict()


@pytest.mark.parametrize("last_stride, shape", [(1, (2, 2048, 4, 2)), (2, (2, 2048, 2, 1))])
def test_resnest_last_stride_dilates_layer4(last_stride, shape):
    b = ResNeStBackbone("50x", last_stride).eval()
    with torch.no_grad():
        assert b(torch.randn(2, 3, 64, 32)).feature.shape == shape
    conv = b.layer4[1].conv2.conv
    assert conv.dilation == ((2, 2) if last_stride == 1 else (1, 1)) and b.layer4[0].conv2.conv.dilation == (1, 1)
    assert b.layer4[0].avd and b.layer4[0].avd_layer.stride == last_stride  # fast-reid's avd, even at stride 1
    assert not b.layer1[0].avd and not b.layer4[1].avd


def test_bad_settings_give_clear_errors():
    with pytest.raises(ConfigError, match=r"WITH_NL.*18x, 34x, 50x, 101x; DEPTH '152x'"):
        build_backbone(_cfg(DEPTH="152x", WITH_NL=True))
    with pytest.raises(ConfigError, match=r"NORM 'GN' is not supported; valid: BN, syncBN"):
        build_backbone(_cfg(DEPTH="18x", NORM="GN"))
    with pytest.raises(ConfigError, match=r"DEPTH '18x' for a ResNeSt; valid: 50x, 101x"):
        build_backbone(_cfg(NAME="build_resnest_backbone", DEPTH="18x"))
    with pytest.raises(ConfigError, match=r"PRETRAIN_PATH is empty.*resnest50"):
        build_backbone(_cfg(NAME="build_resnest_backbone", PRETRAIN=True))
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        build_backbone(_cfg(NAME="build_resnest_backbone", PRETRAIN=True, PRETRAIN_PATH="/nonexistent/r.pth"))
