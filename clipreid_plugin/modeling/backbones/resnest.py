"""ResNeSt (Zhang et al., 2020) in fast-reid's layout: split-attention blocks, deep stem, avg-down, avd.

Written after fast-reid's ``fastreid/modeling/backbones/resnest.py`` and ``fastreid/layers/splat.py``
(JDAI-CV/fast-reid @ c9bc3ce), with its fixed choices: radix 2, one group of width 64, a deep stem
(three 3x3 convs of ``stem_width``, ``stem_width``, ``2 * stem_width`` channels), average-pool
downsampling in the shortcuts (avg-down), and the block's stride moved to a 3x3 average pool after
the split-attention conv (avd). ``LAST_STRIDE 1`` keeps layer4 at stride 1 and dilates its
blocks after the first by 2 (fast-reid's "dilation 2" branch). Its first block still gets the avd
pool (fast-reid builds it for the first block of a stage even at stride 1), a 3x3 stride-1 average.

Parameter names are fast-reid's (= the ResNeSt authors' release files, e.g. ``resnest50-528c19ca.pth``):
``conv1.0/1/3/4/6``, ``bn1``, ``layerK.i.{conv1, bn1, conv2.{conv, bn0, fc1, bn1, fc2}, conv3, bn3,
downsample.1/2}``.
"""

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipreid_plugin.config import configurable
from clipreid_plugin.utils.checkpoint import CheckpointError, load_model_weights
from clipreid_plugin.utils.errors import ConfigError, InputFileError

from .base import Backbone, BackboneOutput
from .build import BACKBONE_REGISTRY
from .norm import norm_layer

__all__ = ["ResNeStBackbone", "SplitAttentionConv2d", "build_resnest_backbone", "RESNEST_LAYOUTS"]

logger = logging.getLogger(__name__)

# MODEL.BACKBONE.DEPTH -> (blocks per stage, stem width): fast-reid's table.
RESNEST_LAYOUTS = {
    "50x": ((3, 4, 6, 3), 32),
    "101x": ((3, 4, 23, 3), 64),
    "200x": ((3, 24, 36, 3), 64),
    "269x": ((3, 30, 48, 8), 64),
}


class SplitAttentionConv2d(nn.Module):
    """Split attention over ``radix`` groups of a 3x3 conv's output (fast-reid's ``SplAtConv2d``).

    The conv makes ``radix`` maps of ``channels`` channels; their sum, pooled, goes through
    fc1 -> norm -> ReLU -> fc2 to ``radix`` logits per channel, softmax-ed over the radix; the
    output is the attention-weighted sum of the maps.

    Args:
        in_channels / channels: input and output channels.
        stride, dilation: of the 3x3 conv (padding = dilation).
        radix: number of splits (> 1).
        norm: ``MODEL.BACKBONE.NORM``.
        reduction: hidden width of the attention is ``max(in_channels * radix // reduction, 32)``.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1, radix: int = 2,
                 norm: str = "BN", reduction: int = 4):
        super().__init__()
        if radix < 2:
            raise ConfigError("SplitAttentionConv2d needs radix >= 2.")
        hidden = max(in_channels * radix // reduction, 32)
        self.radix = radix
        self.conv = nn.Conv2d(in_channels, channels * radix, 3, stride=stride, padding=dilation, dilation=dilation,
                              groups=radix, bias=False)
        self.bn0 = norm_layer(norm, channels * radix)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.bn1 = norm_layer(norm, hidden)
        self.fc2 = nn.Conv2d(hidden, channels * radix, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, in_channels, h, w). Returns: (B, channels, h', w')."""
        x = self.relu(self.bn0(self.conv(x)))
        b, rc = x.shape[:2]
        splits = torch.split(x, rc // self.radix, dim=1)
        gap = F.adaptive_avg_pool2d(sum(splits), 1)
        attention = self.fc2(self.relu(self.bn1(self.fc1(gap))))
        # softmax over the radix: (B, radix * C) viewed as (B, 1 group, radix, C)
        attention = F.softmax(attention.view(b, 1, self.radix, -1).transpose(1, 2), dim=1).reshape(b, -1, 1, 1)
        weights = torch.split(attention, rc // self.radix, dim=1)
        return sum(w * s for w, s in zip(weights, splits)).contiguous()


class ResNeStBottleneck(nn.Module):
    """1x1 conv -> split-attention 3x3 -> (avd pool) -> 1x1 conv, with a residual connection.

    Args:
        inplanes / planes: input channels and bottleneck width (output ``4 * planes``).
        stride: the block's stride, taken by the avd pool when ``avd``.
        downsample: the shortcut, or None for the identity.
        avd: put a 3x3 average pool of stride ``stride`` after the split-attention conv.
        dilation: of the 3x3 conv.
        norm: ``MODEL.BACKBONE.NORM``.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 avd: bool = False, dilation: int = 1, norm: str = "BN", radix: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.avd = avd
        if avd:
            self.avd_layer = nn.AvgPool2d(3, stride, padding=1)
        self.conv2 = SplitAttentionConv2d(planes, planes, stride=1 if avd else stride, dilation=dilation,
                                          radix=radix, norm=norm)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.bn1(self.conv1(x))))
        if self.avd:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNeStBackbone(Backbone):
    """ResNeSt stem and four stages (fast-reid's ResNeSt-50/101/200/269); returns the layer4 map.

    Args:
        depth: a key of :data:`RESNEST_LAYOUTS`.
        last_stride: 1 = layer4 at stride 1, dilated by 2 after its first block (fast-reid); 2 = ImageNet's.
        norm: ``MODEL.BACKBONE.NORM``.

    Attributes:
        out_features (int): 2048.
    """

    prefers_channels_last = True

    @configurable
    def __init__(self, depth: str = "50x", last_stride: int = 1, *, norm: str = "BN"):
        super().__init__()
        if depth not in RESNEST_LAYOUTS:
            raise ConfigError(f"Unknown MODEL.BACKBONE.DEPTH {depth!r} for a ResNeSt; valid: {', '.join(RESNEST_LAYOUTS)}.")
        if last_stride not in (1, 2):
            raise ConfigError(f"MODEL.BACKBONE.LAST_STRIDE must be 1 or 2, got {last_stride}.")
        blocks, stem = RESNEST_LAYOUTS[depth]
        self.depth = depth
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False), norm_layer(norm, stem), nn.ReLU(inplace=True),
            nn.Conv2d(stem, stem, 3, padding=1, bias=False), norm_layer(norm, stem), nn.ReLU(inplace=True),
            nn.Conv2d(stem, stem * 2, 3, padding=1, bias=False))
        self.bn1 = norm_layer(norm, stem * 2)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._inplanes = stem * 2
        self.layer1 = self._make_layer(64, blocks[0], 1, norm, first_avd=False)
        self.layer2 = self._make_layer(128, blocks[1], 2, norm)
        self.layer3 = self._make_layer(256, blocks[2], 2, norm)
        if last_stride == 1:
            self.layer4 = self._make_layer(512, blocks[3], 1, norm, dilation=2)
        else:
            self.layer4 = self._make_layer(512, blocks[3], 2, norm)
        for m in self.modules():  # fast-reid's init: He normal on every conv's fan-out (biases: torch's)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.out_features = 512 * ResNeStBottleneck.expansion

    def _make_layer(self, planes: int, n: int, stride: int, norm: str, dilation: int = 1,
                    first_avd: bool = True) -> nn.Sequential:
        out = planes * ResNeStBottleneck.expansion
        downsample = None
        if stride != 1 or self._inplanes != out:
            # avg-down: the shortcut averages (kernel = stride; 1 in a dilated stage) before a 1x1 conv
            pool = stride if dilation == 1 else 1
            downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=pool, stride=pool, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(self._inplanes, out, 1, bias=False), norm_layer(norm, out))
        # the first block is undilated; it has the avd pool when it strides or starts a stage after layer1
        layers = [ResNeStBottleneck(self._inplanes, planes, stride, downsample, avd=stride > 1 or first_avd,
                                    dilation=1, norm=norm)]
        self._inplanes = out
        layers += [ResNeStBottleneck(out, planes, dilation=dilation, norm=norm) for _ in range(1, n)]
        return nn.Sequential(*layers)

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Arguments from ``MODEL.BACKBONE.{DEPTH, LAST_STRIDE, NORM}``."""
        c = cfg.MODEL.BACKBONE
        return {"depth": c.DEPTH, "last_stride": c.LAST_STRIDE, "norm": c.NORM}

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> BackboneOutput:
        """Args: x (B, 3, H, W) normalised images; camids / viewids are not used.

        Returns:
            BackboneOutput whose ``feature`` is the layer4 map (B, 2048, H/16, W/16) with last stride 1.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return BackboneOutput(self.layer4(self.layer3(self.layer2(self.layer1(x)))))

    def describe(self) -> str:
        """Returns: e.g. "ResNeSt-50"."""
        return f"ResNeSt-{self.depth[:-1]}"


@BACKBONE_REGISTRY.register()
@configurable(from_config=lambda cfg: {**ResNeStBackbone.from_config(cfg), "pretrain": cfg.MODEL.BACKBONE.PRETRAIN,
                                       "pretrain_path": cfg.MODEL.BACKBONE.PRETRAIN_PATH})
def build_resnest_backbone(*, pretrain: bool = False, pretrain_path: str = "", **arch) -> ResNeStBackbone:
    """Build a :class:`ResNeStBackbone` and load its ImageNet weights.

    From a config: ``MODEL.BACKBONE.{DEPTH, LAST_STRIDE, NORM, PRETRAIN, PRETRAIN_PATH}``; or with plain
    arguments (those of :class:`ResNeStBackbone` plus ``pretrain`` / ``pretrain_path``). The weights are
    a local copy of the ResNeSt authors' file (github.com/zhanghang1989/ResNeSt releases, e.g.
    ``resnest50-528c19ca.pth``, which fast-reid downloads); nothing is downloaded here.
    """
    backbone = ResNeStBackbone(**arch)
    if pretrain:
        if not pretrain_path:
            raise ConfigError("MODEL.BACKBONE.PRETRAIN is True but MODEL.BACKBONE.PRETRAIN_PATH is empty: give a local "
                              "copy of the ResNeSt ImageNet file (e.g. resnest50-528c19ca.pth from "
                              "github.com/zhanghang1989/ResNeSt/releases).")
        try:
            load_model_weights(backbone, pretrain_path, strict_shapes=True)
        except CheckpointError as e:
            if "not found" in str(e):
                raise InputFileError(f"MODEL.BACKBONE.PRETRAIN_PATH {pretrain_path!r} does not exist (a local ResNeSt "
                                     f"ImageNet file; nothing is downloaded at run time).") from None
            raise CheckpointError(f"MODEL.BACKBONE.PRETRAIN_PATH {pretrain_path} does not fit a ResNeSt of "
                                  f"MODEL.BACKBONE.DEPTH {backbone.depth!r}: {e}") from None
    elif pretrain_path:
        logger.warning(f"MODEL.BACKBONE.PRETRAIN_PATH is set but MODEL.BACKBONE.PRETRAIN is False: "
                       f"{pretrain_path} is not loaded (random initialisation).")
    return backbone
