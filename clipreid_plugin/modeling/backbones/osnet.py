"""OSNet and OSNet-AIN (Zhou et al., ICCV 2019 / TPAMI 2021) as a ReID backbone, in torchreid's layouts.

The backbone is torchreid's ``OSNet.featuremaps``: the stem, three stages of omni-scale
blocks and ``conv5``; its ``feature`` is the ``conv5`` map (B, C, H/16, W/16). torchreid's
global average pool, ``fc`` (Linear + BN1d + ReLU, 512) and biased ``classifier`` are a head
(:class:`~clipreid_plugin.modeling.heads.TorchreidHead`), so OSNet also runs under the other
heads (BNNeck ``EmbeddingHead``) and meta-architectures, which pool the map themselves.

Parameter and buffer names are torchreid's (``conv1.conv.weight``, ``conv2.0.conv2a.bn.weight``
for OSNet; ``conv2.0.conv2.1.layers.0.conv1.weight``, ``pool2.0.conv.weight`` for OSNet-AIN),
so a torchreid state dict loads into the backbone unchanged and the checkpoint converter
(:mod:`clipreid_plugin.modeling.backbones.osnet_checkpoint`) only prefixes names.

Written from torchreid's description and code (KaiyangZhou/deep-person-reid @ f8cd150,
``torchreid/models/osnet.py`` and ``osnet_ain.py``), not copied.
"""

import logging
import os
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clipreid_plugin.config.configurable import configurable
from clipreid_plugin.utils.checkpoint import load_model_weights
from clipreid_plugin.utils.errors import ConfigError, InputFileError

from .base import Backbone, BackboneOutput
from .build import BACKBONE_REGISTRY

__all__ = ["OSNetBackbone", "build_osnet_backbone", "OSNET_WIDTHS"]

logger = logging.getLogger(__name__)

# MODEL.BACKBONE.DEPTH -> channels (stem, stage 2, stage 3, stage 4 = conv5), torchreid's widths.
OSNET_WIDTHS = {
    "x1_0": (64, 256, 384, 512),
    "x0_75": (48, 192, 288, 384),
    "x0_5": (32, 128, 192, 256),
    "x0_25": (16, 64, 96, 128),
}

# OSNet-AIN: which blocks of stages 2, 3, 4 carry instance normalisation inside the residual
# (torchreid's osnet_ain_x*: [INin, INin], [plain, INin], [INin, plain]).
_AIN_BLOCKS = ((True, True), (False, True), (True, False))


class _ConvBNReLU(nn.Module):
    """conv (no bias) -> BatchNorm2d (or affine InstanceNorm2d) -> optional ReLU.

    Names ``conv`` / ``bn`` are torchreid's ``ConvLayer`` / ``Conv1x1`` / ``Conv1x1Linear``.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 relu: bool = True, norm: str = "bn"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        if norm == "bn":
            self.bn = nn.BatchNorm2d(cout)
        elif norm == "in":
            self.bn = nn.InstanceNorm2d(cout, affine=True)
        else:  # OSNet-AIN's INin blocks: the 1x1 conv before the instance norm has no norm of its own
            self.bn = None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class _LiteConv3x3(nn.Module):
    """1x1 linear conv, depth-wise 3x3 conv, BN, ReLU (torchreid's ``LightConv3x3``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, groups=channels)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv2(self.conv1(x))))


class _Stream(nn.Module):
    """``depth`` lite 3x3 convs in a row under ``layers`` (OSNet-AIN's ``LightConvStream``)."""

    def __init__(self, channels: int, depth: int):
        super().__init__()
        self.layers = nn.Sequential(*[_LiteConv3x3(channels) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _AggregationGate(nn.Module):
    """Channel gate shared by the streams: x * sigmoid(fc2(relu(fc1(avgpool(x))))) (reduction 16)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(w)


class _OSBlock(nn.Module):
    """Omni-scale residual block: 1x1 reduce, T = 1..4 stacked lite-3x3 streams, unified gate, 1x1 expand.

    Args:
        cin, cout: channels in and out (a 1x1 conv + BN ``downsample`` shortcut when they differ).
        ain_layout: OSNet-AIN's names (streams in a ``conv2`` ModuleList of ``layers``) instead of
            OSNet's (``conv2a`` ... ``conv2d``).
        instance_norm: OSNet-AIN's "INin" block: ``conv3`` without BN, then an affine
            InstanceNorm2d ``IN`` inside the residual branch.
    """

    def __init__(self, cin: int, cout: int, ain_layout: bool, instance_norm: bool = False):
        super().__init__()
        mid = cout // 4
        self.conv1 = _ConvBNReLU(cin, mid)
        if ain_layout:
            self.conv2 = nn.ModuleList(_Stream(mid, t) for t in range(1, 5))
        else:
            self.conv2a = _LiteConv3x3(mid)
            self.conv2b = nn.Sequential(*[_LiteConv3x3(mid) for _ in range(2)])
            self.conv2c = nn.Sequential(*[_LiteConv3x3(mid) for _ in range(3)])
            self.conv2d = nn.Sequential(*[_LiteConv3x3(mid) for _ in range(4)])
        self.gate = _AggregationGate(mid)
        self.conv3 = _ConvBNReLU(mid, cout, relu=False, norm="none" if instance_norm else "bn")
        self.downsample = _ConvBNReLU(cin, cout, relu=False) if cin != cout else None
        self.IN = nn.InstanceNorm2d(cout, affine=True) if instance_norm else None
        self.ain_layout = ain_layout

    def _streams(self) -> Sequence[nn.Module]:
        if self.ain_layout:
            return list(self.conv2)
        return [self.conv2a, self.conv2b, self.conv2c, self.conv2d]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        fused = None
        for stream in self._streams():  # summed in stream order, as torchreid
            gated = self.gate(stream(x1))
            fused = gated if fused is None else fused + gated
        out = self.conv3(fused)
        if self.IN is not None:
            out = self.IN(out)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


def _transition(channels: int) -> nn.Sequential:
    """1x1 conv + BN + ReLU, then 2x2 average pooling (halves the map between stages)."""
    return nn.Sequential(_ConvBNReLU(channels, channels), nn.AvgPool2d(2, stride=2))


class OSNetBackbone(Backbone):
    """OSNet (``with_ain`` False) or OSNet-AIN (True) up to ``conv5``: feature (B, C, H/16, W/16).

    Args:
        depth: width multiplier name, a key of :data:`OSNET_WIDTHS` ("x1_0", "x0_75", "x0_5", "x0_25").
        with_ain: OSNet-AIN: instance normalisation in the stem and inside the residual of the
            blocks torchreid marks "INin".
    """

    prefers_channels_last = True

    def __init__(self, depth: str = "x1_0", with_ain: bool = False):
        super().__init__()
        if depth not in OSNET_WIDTHS:
            raise ConfigError(f"MODEL.BACKBONE.DEPTH {depth!r} is not an OSNet width; valid for build_osnet_backbone: "
                              f"{', '.join(OSNET_WIDTHS)}.")
        c0, c1, c2, c3 = OSNET_WIDTHS[depth]
        self.depth, self.with_ain = depth, bool(with_ain)
        self.conv1 = _ConvBNReLU(3, c0, kernel=7, stride=2, padding=3, norm="in" if with_ain else "bn")
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = [(c0, c1), (c1, c2), (c2, c3)]
        if with_ain:
            # the transitions are top-level pool2 / pool3 in torchreid's OSNet-AIN
            self.conv2 = self._stage(*widths[0], _AIN_BLOCKS[0])
            self.pool2 = _transition(c1)
            self.conv3 = self._stage(*widths[1], _AIN_BLOCKS[1])
            self.pool3 = _transition(c2)
            self.conv4 = self._stage(*widths[2], _AIN_BLOCKS[2])
        else:
            # ... and the last module of stages conv2 / conv3 in torchreid's OSNet
            self.conv2 = nn.Sequential(*self._stage(*widths[0], (False, False)), _transition(c1))
            self.conv3 = nn.Sequential(*self._stage(*widths[1], (False, False)), _transition(c2))
            self.conv4 = self._stage(*widths[2], (False, False))
        self.conv5 = _ConvBNReLU(c3, c3)
        self.out_features = c3
        self._init_weights()

    def _stage(self, cin: int, cout: int, instance_norm: Sequence[bool]) -> nn.Sequential:
        blocks: List[nn.Module] = []
        for i, inorm in enumerate(instance_norm):
            blocks.append(_OSBlock(cin if i == 0 else cout, cout, self.with_ain, inorm))
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        # torchreid's initialisation (training from scratch): He normal (fan out) for convs,
        # ones / zeros for every norm layer, zero conv biases.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> BackboneOutput:
        """Args: x (B, 3, H, W) normalised images; camids / viewids are not used.

        Returns:
            BackboneOutput whose ``feature`` is the ``conv5`` map (B, out_features, H/16, W/16).
        """
        x = self.maxpool(self.conv1(x))
        x = self.conv2(x)
        if self.with_ain:
            x = self.pool2(x)
        x = self.conv3(x)
        if self.with_ain:
            x = self.pool3(x)
        return BackboneOutput(self.conv5(self.conv4(x)))

    def describe(self) -> str:
        """Returns: e.g. "OSNet x1.0", "OSNet-AIN x1.0"."""
        return f"OSNet{'-AIN' if self.with_ain else ''} {self.depth.replace('_', '.')}"


def load_pretrained_osnet(backbone: OSNetBackbone, path: str) -> dict:
    """Load torchreid ImageNet weights (e.g. ``osnet_x1_0_imagenet.pth``) into ``backbone``.

    The file's ``fc`` / ``classifier`` (ImageNet's 1000 classes) have no counterpart here and are
    reported as unexpected; any backbone tensor missing or of another shape is an error.

    Args:
        backbone: the backbone.
        path: the state-dict file (``~`` and environment variables are expanded).

    Returns:
        ``{"missing": [...], "unexpected": [...], "mismatched": [...]}``.
    """
    path = os.path.expandvars(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise InputFileError(
            f"MODEL.BACKBONE.PRETRAIN_PATH {path!r} does not exist. It must be a local torchreid ImageNet file for "
            f"{backbone.describe()} (torchreid's model zoo: {'osnet_ain' if backbone.with_ain else 'osnet'}_"
            f"{backbone.depth}_imagenet.pth); nothing is downloaded at run time. Or set MODEL.BACKBONE.PRETRAIN False.")
    return load_model_weights(backbone, path, strict_shapes=True, allow_partial=False)


def _osnet_from_config(cfg) -> dict:
    c = cfg.MODEL.BACKBONE
    if c.PRETRAIN and not c.PRETRAIN_PATH:
        raise ConfigError("MODEL.BACKBONE.PRETRAIN is True but MODEL.BACKBONE.PRETRAIN_PATH is empty: give the local "
                          "torchreid ImageNet file (e.g. osnet_x1_0_imagenet.pth).")
    return {"depth": c.DEPTH, "with_ain": c.WITH_AIN, "pretrain_path": c.PRETRAIN_PATH if c.PRETRAIN else ""}


@BACKBONE_REGISTRY.register()
@configurable(from_config=_osnet_from_config)
def build_osnet_backbone(*, depth: str = "x1_0", with_ain: bool = False, pretrain_path: str = "") -> OSNetBackbone:
    """Build OSNet / OSNet-AIN from ``MODEL.BACKBONE.{DEPTH, WITH_AIN, PRETRAIN, PRETRAIN_PATH}``.

    Args:
        depth: "x1_0" (the published models), "x0_75", "x0_5" or "x0_25".
        with_ain: OSNet-AIN instead of OSNet.
        pretrain_path: torchreid ImageNet weights to load ("" = torchreid's random initialisation).

    Returns:
        :class:`OSNetBackbone`.
    """
    backbone = OSNetBackbone(depth, with_ain)
    if pretrain_path:
        load_pretrained_osnet(backbone, pretrain_path)
    return backbone
