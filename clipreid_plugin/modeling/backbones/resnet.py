"""torchvision ResNet / ResNeXt as a ReID backbone (layer4 feature map, optional last stride 1).

Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so an
ImageNet state dict from torchvision loads unchanged. Weights are only read from a local file
(``MODEL.BACKBONE.PRETRAIN_PATH``); nothing is downloaded at run time. torchvision caches its
downloads under ``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch/hub/checkpoints`` by
default), e.g. ``resnet50-0676ba61.pth``; fetch one once on a machine with internet access
with ``python -c "import torchvision; torchvision.models.resnet50(weights='IMAGENET1K_V1')"``.
"""

import logging
import os
from typing import Optional

import torch
import torchvision
from torch import nn

from clipreid_plugin.utils.checkpoint import CheckpointError, load_model_weights
from clipreid_plugin.utils.errors import ConfigError

from .base import Backbone, BackboneOutput
from .build import BACKBONE_REGISTRY
from .torchvision_weights import local_torchvision_weights, torchvision_weights_file_name

__all__ = ["ResNetBackbone", "build_resnet_backbone", "RESNET_ARCHS"]

logger = logging.getLogger(__name__)

# MODEL.BACKBONE.DEPTH -> (torchvision constructor, weights enum name).
RESNET_ARCHS = {
    "18x": ("resnet18", "ResNet18_Weights"),
    "34x": ("resnet34", "ResNet34_Weights"),
    "50x": ("resnet50", "ResNet50_Weights"),
    "101x": ("resnet101", "ResNet101_Weights"),
    "152x": ("resnet152", "ResNet152_Weights"),
    "50x_32x4d": ("resnext50_32x4d", "ResNeXt50_32X4D_Weights"),
    "101x_32x8d": ("resnext101_32x8d", "ResNeXt101_32X8D_Weights"),
}


class ResNetBackbone(Backbone):
    prefers_channels_last = True

    """The stem and the four stages of a torchvision ResNet; returns the layer4 feature map.

    Args:
        depth: a key of :data:`RESNET_ARCHS` ("50x", "50x_32x4d", ...).
        last_stride: stride of layer4 (1 = the bag-of-tricks "last stride" trick, doubling the
            output resolution; 2 = torchvision's default).

    Attributes:
        out_features (int): channels of the output map (512 for 18x/34x, 2048 otherwise).
    """

    def __init__(self, depth: str = "50x", last_stride: int = 1):
        super().__init__()
        if depth not in RESNET_ARCHS:
            raise ConfigError(f"Unknown MODEL.BACKBONE.DEPTH {depth!r} for a ResNet; valid: {', '.join(RESNET_ARCHS)}.")
        if last_stride not in (1, 2):
            raise ConfigError(f"MODEL.BACKBONE.LAST_STRIDE must be 1 or 2, got {last_stride}.")
        net = getattr(torchvision.models, RESNET_ARCHS[depth][0])(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if last_stride == 1:
            # The first block of layer4 downsamples in one 3x3 conv (conv2 of a Bottleneck,
            # conv1 of a BasicBlock) and in its shortcut's 1x1 conv: set both to stride 1.
            for m in self.layer4[0].modules():
                if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
                    m.stride = (1, 1)
        self.out_features = net.fc.in_features
        self.depth = depth

    def forward(self, x: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> BackboneOutput:
        """Args: x (B, 3, H, W) normalised images; camids / viewids are not used.

        Returns:
            BackboneOutput whose ``feature`` is the layer4 map: (B, out_features, H/16, W/16)
            with last stride 1, (B, out_features, H/32, W/32) with 2.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return BackboneOutput(self.layer4(self.layer3(self.layer2(self.layer1(x)))))

    def describe(self) -> str:
        """Returns: e.g. "ResNet-50", "ResNeXt-50 32x4d"."""
        tv = RESNET_ARCHS[self.depth][0]
        if tv.startswith("resnext"):
            depth, width = tv[len("resnext"):].split("_")
            return f"ResNeXt-{depth} {width}"
        return f"ResNet-{tv[len('resnet'):]}"


def _torchvision_file_name(depth: str) -> str:
    """Returns: the file name torchvision caches the ImageNet weights of ``depth`` under."""
    return torchvision_weights_file_name(RESNET_ARCHS[depth][1])


def load_pretrained_resnet(backbone: ResNetBackbone, path: str, depth: str) -> dict:
    """Load a local torchvision state dict into ``backbone`` and log what did not load.

    The ImageNet classifier (``fc.*``) has no counterpart here and is reported as unexpected.

    Args:
        backbone: the backbone.
        path: the state-dict file (``~`` and environment variables are expanded).
        depth: ``MODEL.BACKBONE.DEPTH`` (for messages).

    Returns:
        ``{"missing": [...], "unexpected": [...], "mismatched": [...]}`` (see ``load_model_weights``).
    """
    path = local_torchvision_weights(path, RESNET_ARCHS[depth][1], RESNET_ARCHS[depth][0], f"DEPTH {depth!r}")
    try:
        return load_model_weights(backbone, path, strict_shapes=True)
    except CheckpointError as e:
        raise CheckpointError(
            f"MODEL.BACKBONE.PRETRAIN_PATH {path} does not fit a ResNet of MODEL.BACKBONE.DEPTH {depth!r} "
            f"(weights of another depth?): {e}"
        ) from None


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg) -> ResNetBackbone:
    """Build the ResNet backbone from ``MODEL.BACKBONE.{DEPTH, LAST_STRIDE, PRETRAIN, PRETRAIN_PATH}``.

    Args:
        cfg: the config.

    Returns:
        :class:`ResNetBackbone`, with ImageNet weights loaded when ``PRETRAIN`` is True.
    """
    c = cfg.MODEL.BACKBONE
    backbone = ResNetBackbone(c.DEPTH, c.LAST_STRIDE)
    if c.PRETRAIN:
        if not c.PRETRAIN_PATH:
            raise ConfigError(
                "MODEL.BACKBONE.PRETRAIN is True but MODEL.BACKBONE.PRETRAIN_PATH is empty: give the local "
                f"torchvision weights file (e.g. {_torchvision_file_name(c.DEPTH)} from "
                f"{os.path.join(torch.hub.get_dir(), 'checkpoints')})."
            )
        load_pretrained_resnet(backbone, c.PRETRAIN_PATH, c.DEPTH)
    elif c.PRETRAIN_PATH:
        # name the file of the depth in use: the path often comes from a base config of another depth
        logger.warning(f"MODEL.BACKBONE.PRETRAIN_PATH is set but MODEL.BACKBONE.PRETRAIN is False: "
                       f"{c.PRETRAIN_PATH} is not loaded (random initialisation). The ImageNet weights of "
                       f"DEPTH {c.DEPTH!r} are {_torchvision_file_name(c.DEPTH)}.")
    return backbone
