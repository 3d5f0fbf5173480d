"""ResNet in fast-reid's layout: IBN-a, squeeze-excitation, non-local blocks, last stride; ResNeXt.

One implementation for every ResNet of the toolkit (``build_resnet_backbone``), written after
fast-reid's ``fastreid/modeling/backbones/resnet.py`` (JDAI-CV/fast-reid @ c9bc3ce):

* the stem's max pool is ``MaxPool2d(3, stride=2, ceil_mode=True)`` without padding (fast-reid's;
  torchvision pads by 1): a 64x32 input gives a 16x8 map after the stem either way, but values at
  the borders differ, so features are fast-reid's, not torchvision's;
* ``WITH_IBN``: ``bn1`` of every block of layer1-3 is :class:`~.ibn.IBN` (IBN-a); layer4 has none;
* ``WITH_SE``: a :class:`~.se.SELayer` on each block's residual branch (reduction 16);
* ``WITH_NL``: :class:`~.non_local.NonLocal` blocks after the last 2 blocks of layer2 and the last
  3 (50x) / 9 (101x) blocks of layer3, as ``NL_2`` / ``NL_3`` module lists (fast-reid's positions
  and one-channel blocks: see :mod:`.non_local`);
* ``LAST_STRIDE``: stride of layer4's first block (1 = bag of tricks).

Parameter names are fast-reid's, which are torchvision's (``conv1``, ``bn1``, ``layerK.i.convJ``,
``downsample.0/1``) plus ``bn1.IN`` / ``bn1.BN``, ``se.fc.*`` and ``NL_k.i.*``. So a torchvision
ImageNet state dict, an IBN-Net release file (``resnet50_ibn_a-d9d0bb7b.pth``) and the backbone of
a fast-reid model-zoo checkpoint all load unchanged. Weights are only read from a local file
(``MODEL.BACKBONE.PRETRAIN_PATH``); nothing is downloaded at run time. torchvision caches its
downloads under ``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch/hub/checkpoints`` by default),
e.g. ``resnet50-0676ba61.pth``; fetch one once on a machine with internet access with
``python -c "import torchvision; torchvision.models.resnet50(weights='IMAGENET1K_V1')"``.
"""

import logging
import os
from typing import List, Optional

import torch
from torch import nn

from clipreid_plugin.config import configurable
from clipreid_plugin.utils.checkpoint import CheckpointError, load_model_weights
from clipreid_plugin.utils.errors import ConfigError

from .base import Backbone, BackboneOutput
from .build import BACKBONE_REGISTRY
from .ibn import IBN
from .non_local import NonLocal
from .norm import norm_layer
from .se import SELayer
from .torchvision_weights import local_torchvision_weights, torchvision_weights_file_name

__all__ = ["ResNetBackbone", "build_resnet_backbone", "RESNET_ARCHS", "RESNET_LAYOUTS", "NON_LOCAL_BLOCKS",
           "BasicBlock", "Bottleneck", "load_pretrained_resnet"]

logger = logging.getLogger(__name__)

# MODEL.BACKBONE.DEPTH -> (torchvision constructor, weights enum name): where the ImageNet file comes from.
RESNET_ARCHS = {
    "18x": ("resnet18", "ResNet18_Weights"),
    "34x": ("resnet34", "ResNet34_Weights"),
    "50x": ("resnet50", "ResNet50_Weights"),
    "101x": ("resnet101", "ResNet101_Weights"),
    "152x": ("resnet152", "ResNet152_Weights"),
    "50x_32x4d": ("resnext50_32x4d", "ResNeXt50_32X4D_Weights"),
    "101x_32x8d": ("resnext101_32x8d", "ResNeXt101_32X8D_Weights"),
}

# MODEL.BACKBONE.DEPTH -> (bottleneck blocks?, blocks per stage, groups, width per group).
RESNET_LAYOUTS = {
    "18x": (False, (2, 2, 2, 2), 1, 64),
    "34x": (False, (3, 4, 6, 3), 1, 64),
    "50x": (True, (3, 4, 6, 3), 1, 64),
    "101x": (True, (3, 4, 23, 3), 1, 64),
    "152x": (True, (3, 8, 36, 3), 1, 64),
    "50x_32x4d": (True, (3, 4, 6, 3), 32, 4),
    "101x_32x8d": (True, (3, 4, 23, 3), 32, 8),
}

# MODEL.BACKBONE.DEPTH -> non-local blocks per stage with WITH_NL (fast-reid's table: 18x and 34x get
# none; fast-reid has no 152x or ResNeXt, so WITH_NL is refused there rather than guessed).
NON_LOCAL_BLOCKS = {"18x": (0, 0, 0, 0), "34x": (0, 0, 0, 0), "50x": (0, 2, 3, 0), "101x": (0, 2, 9, 0)}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    Args:
        inplanes: input channels; planes: output channels.
        stride: stride of ``conv1`` (and of the shortcut).
        downsample: the shortcut projection, or None for the identity.
        norm: ``MODEL.BACKBONE.NORM``; with_ibn: ``bn1`` is IBN-a; with_se: squeeze-excitation.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 norm: str = "BN", with_ibn: bool = False, with_se: bool = False, groups: int = 1,
                 base_width: int = 64):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ConfigError("BasicBlock (ResNet-18/34) has no grouped or widened variant.")
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = IBN(planes, norm) if with_ibn else norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes) if with_se else nn.Identity()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, grouped for ResNeXt) -> 1x1 convolutions with a residual connection.

    Args: as :class:`BasicBlock`, plus ``groups`` / ``base_width`` (ResNeXt's cardinality and width
    per group: the 3x3 conv has ``int(planes * base_width / 64) * groups`` channels).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 norm: str = "BN", with_ibn: bool = False, with_se: bool = False, groups: int = 1,
                 base_width: int = 64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = IBN(width, norm) if with_ibn else norm_layer(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = norm_layer(norm, width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes * self.expansion) if with_se else nn.Identity()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetBackbone(Backbone):
    """The stem and the four stages of a ResNet in fast-reid's layout; returns the layer4 feature map.

    Args:
        depth: a key of :data:`RESNET_LAYOUTS` ("18x", "50x", "101x", "50x_32x4d", ...).
        last_stride: stride of layer4 (1 = the bag-of-tricks "last stride", doubling the output
            resolution; 2 = ImageNet's).
        norm: ``MODEL.BACKBONE.NORM`` ("BN" or "syncBN").
        with_ibn: IBN-a ``bn1`` in the blocks of layer1-3.
        with_se: squeeze-excitation in every block.
        with_nl: non-local blocks at fast-reid's positions (:data:`NON_LOCAL_BLOCKS`).
        nl_half_channels: non-local blocks of ``in_channels // 2`` intermediate channels (the paper's)
            instead of fast-reid's 1 (see :mod:`.non_local`).

    Attributes:
        out_features (int): channels of the output map (512 for 18x/34x, 2048 otherwise).
    """

    prefers_channels_last = True

    @configurable
    def __init__(self, depth: str = "50x", last_stride: int = 1, *, norm: str = "BN", with_ibn: bool = False,
                 with_se: bool = False, with_nl: bool = False, nl_half_channels: bool = False):
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ConfigError(f"Unknown MODEL.BACKBONE.DEPTH {depth!r} for a ResNet; valid: {', '.join(RESNET_LAYOUTS)}.")
        if last_stride not in (1, 2):
            raise ConfigError(f"MODEL.BACKBONE.LAST_STRIDE must be 1 or 2, got {last_stride}.")
        if with_nl and depth not in NON_LOCAL_BLOCKS:
            raise ConfigError(f"MODEL.BACKBONE.WITH_NL: fast-reid places non-local blocks only in ResNet "
                              f"{', '.join(NON_LOCAL_BLOCKS)}; DEPTH {depth!r} has no such layout.")
        bottleneck, blocks, groups, base_width = RESNET_LAYOUTS[depth]
        block = Bottleneck if bottleneck else BasicBlock
        self.depth, self.with_ibn, self.with_se = depth, with_ibn, with_se
        self._inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)  # fast-reid's: no padding
        common = dict(norm=norm, with_se=with_se, groups=groups, base_width=base_width)
        self.layer1 = self._make_layer(block, 64, blocks[0], 1, with_ibn=with_ibn, **common)
        self.layer2 = self._make_layer(block, 128, blocks[1], 2, with_ibn=with_ibn, **common)
        self.layer3 = self._make_layer(block, 256, blocks[2], 2, with_ibn=with_ibn, **common)
        self.layer4 = self._make_layer(block, 512, blocks[3], last_stride, with_ibn=False, **common)
        self._init_weights()
        # Non-local blocks after the last n blocks of a stage: NL_k[j] follows block nl_positions[k][j].
        counts = NON_LOCAL_BLOCKS[depth] if with_nl else (0, 0, 0, 0)
        self.nl_positions: List[List[int]] = []
        for k, (n, width) in enumerate(zip(counts, (64, 128, 256, 512)), start=1):
            stage_blocks = blocks[k - 1]
            self.nl_positions.append(list(range(stage_blocks - n, stage_blocks)))
            if n:
                channels = width * block.expansion
                inter = channels // 2 if nl_half_channels else 1
                setattr(self, f"NL_{k}", nn.ModuleList(NonLocal(channels, norm, inter) for _ in range(n)))
        self.with_nl = any(counts)
        if with_nl and not self.with_nl:
            logger.warning(f"MODEL.BACKBONE.WITH_NL: fast-reid places no non-local block in a ResNet {depth} "
                           f"(only in 50x and 101x); none is built.")
        self.out_features = 512 * block.expansion

    def _make_layer(self, block, planes: int, n: int, stride: int, **kwargs) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                norm_layer(kwargs["norm"], planes * block.expansion))
        layers = [block(self._inplanes, planes, stride, downsample, **kwargs)]
        self._inplanes = planes * block.expansion
        layers += [block(self._inplanes, planes, **kwargs) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # fast-reid's (and torchvision's) init: He normal on the fan-out of every conv; norm layers keep
        # torch's weight 1 / bias 0. Runs before the non-local blocks exist (their own init is kept).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Arguments from ``MODEL.BACKBONE.{DEPTH, LAST_STRIDE, NORM, WITH_IBN, WITH_SE, WITH_NL, NL_HALF_CHANNELS}``."""
        c = cfg.MODEL.BACKBONE
        return {"depth": c.DEPTH, "last_stride": c.LAST_STRIDE, "norm": c.NORM, "with_ibn": c.WITH_IBN,
                "with_se": c.WITH_SE, "with_nl": c.WITH_NL, "nl_half_channels": c.NL_HALF_CHANNELS}

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> BackboneOutput:
        """Args: x (B, 3, H, W) normalised images; camids / viewids are not used.

        Returns:
            BackboneOutput whose ``feature`` is the layer4 map: (B, out_features, H/16, W/16)
            with last stride 1, (B, out_features, H/32, W/32) with 2 (rounded up).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for k, stage in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            positions = self.nl_positions[k - 1]
            for i, block in enumerate(stage):
                x = block(x)
                if i in positions:
                    x = getattr(self, f"NL_{k}")[positions.index(i)](x)
        return BackboneOutput(x)

    def describe(self) -> str:
        """Returns: e.g. "ResNet-50", "ResNet-50-IBN-a NL", "ResNeXt-50 32x4d"."""
        tv = RESNET_ARCHS[self.depth][0]
        if tv.startswith("resnext"):
            depth, width = tv[len("resnext"):].split("_")
            name = f"ResNeXt-{depth} {width}"
        else:
            name = f"ResNet-{tv[len('resnet'):]}"
        extras = (["-IBN-a"] if self.with_ibn else []) + ([" SE"] if self.with_se else []) + \
                 ([" NL"] if self.with_nl else [])
        return name + "".join(extras)


def _torchvision_file_name(depth: str) -> str:
    """Returns: the file name torchvision caches the ImageNet weights of ``depth`` under."""
    return torchvision_weights_file_name(RESNET_ARCHS[depth][1])


def load_pretrained_resnet(backbone: ResNetBackbone, path: str, depth: str) -> dict:
    """Load a local ImageNet state dict (torchvision's, or IBN-Net's for IBN-a) into ``backbone``.

    The ImageNet classifier (``fc.*``) has no counterpart here and is reported as unexpected, as are
    the IBN / SE / non-local tensors a plain torchvision file lacks (they keep their initialisation).

    Args:
        backbone: the backbone.
        path: the state-dict file (``~`` and environment variables are expanded).
        depth: ``MODEL.BACKBONE.DEPTH`` (for messages).

    Returns:
        ``{"missing": [...], "unexpected": [...], "mismatched": [...]}`` (see ``load_model_weights``).
    """
    path = local_torchvision_weights(path, RESNET_ARCHS[depth][1], RESNET_ARCHS[depth][0], f"DEPTH {depth!r}")
    try:
        report = load_model_weights(backbone, path, strict_shapes=True)
    except CheckpointError as e:
        raise CheckpointError(
            f"MODEL.BACKBONE.PRETRAIN_PATH {path} does not fit a ResNet of MODEL.BACKBONE.DEPTH {depth!r} "
            f"(weights of another depth?): {e}"
        ) from None
    if backbone.with_ibn and any(".bn1.IN." in k for k in report["missing"]):
        logger.warning(f"{path} has no IBN-a weights (bn1.IN / bn1.BN): WITH_IBN wants IBN-Net's ImageNet file, "
                       f"e.g. resnet50_ibn_a-d9d0bb7b.pth from github.com/XingangPan/IBN-Net/releases.")
    return report


@BACKBONE_REGISTRY.register()
@configurable(from_config=lambda cfg: {**ResNetBackbone.from_config(cfg), "pretrain": cfg.MODEL.BACKBONE.PRETRAIN,
                                       "pretrain_path": cfg.MODEL.BACKBONE.PRETRAIN_PATH})
def build_resnet_backbone(*, pretrain: bool = False, pretrain_path: str = "", **arch) -> ResNetBackbone:
    """Build a :class:`ResNetBackbone` and load its ImageNet weights.

    From a config: ``MODEL.BACKBONE.{DEPTH, LAST_STRIDE, NORM, WITH_IBN, WITH_SE, WITH_NL,
    NL_HALF_CHANNELS, PRETRAIN, PRETRAIN_PATH}``; or with plain arguments (those of
    :class:`ResNetBackbone` plus ``pretrain`` / ``pretrain_path``).

    Returns:
        :class:`ResNetBackbone`, with ImageNet weights loaded when ``pretrain`` is True.
    """
    backbone = ResNetBackbone(**arch)
    depth = backbone.depth
    if pretrain:
        if not pretrain_path:
            raise ConfigError(
                "MODEL.BACKBONE.PRETRAIN is True but MODEL.BACKBONE.PRETRAIN_PATH is empty: give the local "
                f"torchvision weights file (e.g. {_torchvision_file_name(depth)} from "
                f"{os.path.join(torch.hub.get_dir(), 'checkpoints')})."
            )
        load_pretrained_resnet(backbone, pretrain_path, depth)
    elif pretrain_path:
        # name the file of the depth in use: the path often comes from a base config of another depth
        logger.warning(f"MODEL.BACKBONE.PRETRAIN_PATH is set but MODEL.BACKBONE.PRETRAIN is False: "
                       f"{pretrain_path} is not loaded (random initialisation). The ImageNet weights of "
                       f"DEPTH {depth!r} are {_torchvision_file_name(depth)}.")
    return backbone
