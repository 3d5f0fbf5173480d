"""torchvision Vision Transformer adapted for ReID the TransReID way (He et al., ICCV 2021).

What changes against ``torchvision.models.vit_b_16``:

* non-square input (e.g. 256x128): the positional embedding is sized for the ReID patch grid;
  pretrained weights (a 14x14 grid at 224x224) are resized bilinearly to it, class row kept
  (TransReID's ``resize_pos_embed``, shared with the CLIP towers);
* optional overlapping patches: the patch convolution keeps its kernel (the pretrained weights
  fit unchanged) and slides with ``MODEL.BACKBONE.VIT.STRIDE_SIZE`` (TransReID uses 12);
* optional SIE: a learned per-camera embedding, times ``SIE_COE``, added to *every* token together
  with the positional embedding (TransReID; CLIP-ReID adds its SIE to the class token only);
* the output is the class token after the final LayerNorm (B, hidden_dim); the ImageNet
  classifier is dropped. TransReID's JPM branch is not included.

Parameter names are torchvision's (``conv_proj``, ``class_token``, ``encoder.pos_embedding``,
``encoder.layers.*``, ``encoder.ln``), so a torchvision state dict loads after the resize.
Weights are only read from ``MODEL.BACKBONE.PRETRAIN_PATH``; torchvision caches its download as
``$TORCH_HOME/hub/checkpoints/vit_b_16-c867db91.pth`` (``~/.cache/torch/hub/checkpoints`` by
default) after ``torchvision.models.vit_b_16(weights="IMAGENET1K_V1")`` on a machine with internet.
"""

import logging
import math
import os
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torchvision.models.vision_transformer import Encoder

from clipreid_plugin.config.configurable import configurable
from clipreid_plugin.utils.checkpoint import CheckpointError
from clipreid_plugin.utils.errors import ConfigError

from .base import Backbone, BackboneOutput, check_ids_in_range
from .build import BACKBONE_REGISTRY
from .pos_embed import patch_grid, resize_pos_embed
from .torchvision_weights import local_torchvision_weights, torchvision_weights_file_name

__all__ = ["ViTBackbone", "build_vit_backbone", "VIT_ARCHS"]

logger = logging.getLogger(__name__)

# MODEL.BACKBONE.VIT.ARCH -> (patch, layers, heads, hidden, mlp, torchvision weights enum) as in torchvision.
VIT_ARCHS: Dict[str, Tuple[int, int, int, int, int, str]] = {
    "vit_b_16": (16, 12, 12, 768, 3072, "ViT_B_16_Weights"),
    "vit_b_32": (32, 12, 12, 768, 3072, "ViT_B_32_Weights"),
    "vit_l_16": (16, 24, 16, 1024, 4096, "ViT_L_16_Weights"),
    "vit_l_32": (32, 24, 16, 1024, 4096, "ViT_L_32_Weights"),
}


class ViTBackbone(Backbone):
    """A torchvision ViT encoder on a ReID patch grid; returns the class-token feature.

    Args:
        image_size: (H, W) of the input images; fixes the patch grid and the positional embedding.
        patch_size: patch (conv kernel) size.
        num_layers, num_heads, hidden_dim, mlp_dim: transformer sizes (torchvision's names).
        stride: (sh, sw) of the patch convolution; smaller than ``patch_size`` = overlapping patches.
        num_cameras: rows of the SIE camera table; 0 = no SIE.
        sie_coe: multiplier of the SIE embedding (TransReID's ``SIE_COE``, 3.0 there).
        dropout, attention_dropout: torchvision's dropout rates.

    Attributes:
        out_features (int): width of the output feature (``hidden_dim``).
        grid (tuple): (rows, cols) of the patch grid.
        uses_camids (bool): whether the forward pass reads ``camids`` (SIE).
    """

    def __init__(self, image_size: Sequence[int], patch_size: int = 16, num_layers: int = 12, num_heads: int = 12,
                 hidden_dim: int = 768, mlp_dim: int = 3072, stride: Sequence[int] = (16, 16),
                 num_cameras: int = 0, sie_coe: float = 3.0, dropout: float = 0.0, attention_dropout: float = 0.0):
        super().__init__()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        stride = (int(stride[0]), int(stride[1]))
        if min(stride) < 1 or max(stride) > patch_size:
            raise ConfigError(f"MODEL.BACKBONE.VIT.STRIDE_SIZE {list(stride)} must lie in 1..{patch_size} (the patch "
                              f"size): equal to it = TransReID's plain ViT, smaller = overlapping patches.")
        self.grid = patch_grid(self.image_size, patch_size, stride)
        self.patch_size = patch_size
        self.conv_proj = nn.Conv2d(3, hidden_dim, kernel_size=patch_size, stride=stride)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        seq_length = 1 + self.grid[0] * self.grid[1]
        self.encoder = Encoder(seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout)
        self._init_like_torchvision()
        self.uses_camids = num_cameras > 0
        self.sie_coe = float(sie_coe)
        self.arch = f"ViT {hidden_dim}w/{num_layers}L/{patch_size}"
        if self.uses_camids:
            # TransReID: sie_embed (cameras, 1, D), trunc_normal std 0.02
            self.sie_embed = nn.Parameter(torch.zeros(num_cameras, 1, hidden_dim))
            nn.init.trunc_normal_(self.sie_embed, std=0.02)
        self.out_features = hidden_dim

    def _init_like_torchvision(self) -> None:
        # torchvision.models.VisionTransformer.__init__'s patch-embedding init (the encoder inits itself)
        fan_in = self.conv_proj.in_channels * self.conv_proj.kernel_size[0] * self.conv_proj.kernel_size[1]
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)

    def forward(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> BackboneOutput:
        """Args:
            images: (B, 3, H, W) normalised, (H, W) = the ``image_size`` the backbone was built for.
            camids: (B,) 0-based camera ids for SIE; None = no camera embedding.
            viewids: not used.

        Returns:
            BackboneOutput whose ``feature`` is the (B, hidden_dim) class token after the final
            LayerNorm.
        """
        if tuple(images.shape[-2:]) != self.image_size:
            raise ConfigError(f"The ViT backbone was built for {self.image_size[0]}x{self.image_size[1]} inputs "
                              f"(INPUT.SIZE_TRAIN) but got {images.shape[-2]}x{images.shape[-1]}: set INPUT.SIZE_TEST "
                              f"equal to INPUT.SIZE_TRAIN (the positional embedding has one row per patch).")
        x = self.conv_proj(images).flatten(2).transpose(1, 2)  # (B, rows*cols, D), row-major as the grid
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.encoder.pos_embedding
        if self.uses_camids and camids is not None:
            check_ids_in_range(camids, self.sie_embed.shape[0], "camera",
                               "MODEL.BACKBONE.VIT.NUM_CAMERAS is smaller than the data's camera count.")
            camids = camids.to(x.device)
            x = x + self.sie_coe * self.sie_embed[camids]  # (B, 1, D): the same vector on every token
        # the encoder's own forward would add pos_embedding again: run its parts
        x = self.encoder.layers(self.encoder.dropout(x))
        return BackboneOutput(self.encoder.ln(x)[:, 0])

    def describe(self) -> str:
        """Returns: e.g. "ViT-B/16" for the torchvision sizes (else width / layers / patch), plus
        " SIE" with a camera embedding and " OLP" with overlapping patches."""
        name = self.arch
        for arch, (patch, layers, _, hidden, _, _) in VIT_ARCHS.items():
            if (patch, layers, hidden) == (self.patch_size, len(self.encoder.layers), self.out_features):
                _, size, patch_text = arch.split("_")  # "vit_b_16" -> "ViT-B/16"
                name = f"ViT-{size.upper()}/{patch_text}"
        overlapping = tuple(self.conv_proj.stride) != (self.patch_size, self.patch_size)
        return name + (" SIE" if self.uses_camids else "") + (" OLP" if overlapping else "")

    def load_torchvision_state_dict(self, state_dict: Dict[str, torch.Tensor], source: str = "state dict") -> Dict:
        """Load a torchvision ``VisionTransformer`` state dict, resizing the positional embedding.

        The ImageNet classifier (``heads.*``) is dropped. A square source grid is assumed (every
        torchvision ViT is trained on square images).

        Args:
            state_dict: torchvision parameter names.
            source: where it came from (for messages).

        Returns:
            ``{"missing": [...], "unexpected": [...]}`` keys.

        Raises:
            CheckpointError: a tensor whose shape does not fit (a different ViT size).
        """
        sd = {k: v for k, v in state_dict.items() if not k.startswith("heads.")}
        pe = sd.get("encoder.pos_embedding")
        if pe is not None:
            n = pe.shape[1] - 1
            side = math.isqrt(n)
            if side * side != n:
                raise CheckpointError(f"{source}: encoder.pos_embedding has {n} grid rows, not a square grid; "
                                      f"expected a torchvision ViT checkpoint.")
            sd["encoder.pos_embedding"] = resize_pos_embed(pe[0], (side, side), self.grid).unsqueeze(0)
            if (side, side) != self.grid:
                logger.info(f"Resized the ViT positional embedding from {side}x{side} to {self.grid[0]}x{self.grid[1]}.")
        own = self.state_dict()
        bad = [f"{k}: {tuple(v.shape)} in file vs {tuple(own[k].shape)} in model"
               for k, v in sd.items() if k in own and own[k].shape != v.shape]
        if bad:
            raise CheckpointError(f"{source} does not fit this ViT (MODEL.BACKBONE.VIT.ARCH of another size?):\n  "
                                  + "\n  ".join(bad))
        result = self.load_state_dict(sd, strict=False)
        report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
        if report["missing"] or report["unexpected"]:
            logger.warning(f"Keys that did not load from {source}: {report}")
        return report


def _torchvision_file_name(arch: str) -> str:
    """Returns: the file name torchvision caches the ImageNet weights of ``arch`` under."""
    return torchvision_weights_file_name(VIT_ARCHS[arch][5])


def _read_state_dict(path: str, arch: str) -> Dict[str, torch.Tensor]:
    path = local_torchvision_weights(path, VIT_ARCHS[arch][5], arch, f"MODEL.BACKBONE.VIT.ARCH {arch!r}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same actionable message
        raise CheckpointError(f"Cannot read MODEL.BACKBONE.PRETRAIN_PATH {path}: {e}") from None
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise CheckpointError(f"MODEL.BACKBONE.PRETRAIN_PATH {path} holds a {type(data).__name__}, not a state dict.")
    return data


def _arch_spec(arch: str) -> tuple:
    """Returns: ``VIT_ARCHS[arch]``; else ConfigError listing the valid names."""
    if arch not in VIT_ARCHS:
        raise ConfigError(f"Unknown MODEL.BACKBONE.VIT.ARCH {arch!r}; valid: {', '.join(VIT_ARCHS)}.")
    return VIT_ARCHS[arch]


def _vit_backbone_args(cfg) -> dict:
    """``build_vit_backbone``'s arguments from ``MODEL.BACKBONE.{VIT.*, PRETRAIN(_PATH)}`` and ``INPUT.SIZE_*``."""
    b, v = cfg.MODEL.BACKBONE, cfg.MODEL.BACKBONE.VIT
    _arch_spec(v.ARCH)
    if tuple(cfg.INPUT.SIZE_TRAIN) != tuple(cfg.INPUT.SIZE_TEST):
        raise ConfigError(f"The ViT backbone needs INPUT.SIZE_TEST == INPUT.SIZE_TRAIN (got {list(cfg.INPUT.SIZE_TEST)}"
                          f" vs {list(cfg.INPUT.SIZE_TRAIN)}): its positional embedding has one row per patch.")
    if v.SIE_CAMERA and v.NUM_CAMERAS <= 0:
        raise ConfigError("MODEL.BACKBONE.VIT.SIE_CAMERA needs MODEL.BACKBONE.VIT.NUM_CAMERAS > 0 (the number of "
                          "cameras of the training set, e.g. 6 for Market-1501, 20 for VeRi-776).")
    if b.PRETRAIN and not b.PRETRAIN_PATH:
        raise ConfigError(f"MODEL.BACKBONE.PRETRAIN is True but MODEL.BACKBONE.PRETRAIN_PATH is empty: give the "
                          f"local torchvision weights file (e.g. {_torchvision_file_name(v.ARCH)} from "
                          f"{os.path.join(torch.hub.get_dir(), 'checkpoints')}).")
    if not b.PRETRAIN and b.PRETRAIN_PATH:
        logger.warning(f"MODEL.BACKBONE.PRETRAIN_PATH is set but MODEL.BACKBONE.PRETRAIN is False: "
                       f"{b.PRETRAIN_PATH} is not loaded (random initialisation).")
    return {"image_size": tuple(cfg.INPUT.SIZE_TRAIN), "arch": v.ARCH, "stride": tuple(v.STRIDE_SIZE),
            "num_cameras": v.NUM_CAMERAS if v.SIE_CAMERA else 0, "sie_coe": v.SIE_COE,
            "pretrain_path": b.PRETRAIN_PATH if b.PRETRAIN else ""}


@BACKBONE_REGISTRY.register()
@configurable(from_config=_vit_backbone_args)
def build_vit_backbone(*, image_size: Sequence[int], arch: str = "vit_b_16", stride: Sequence[int] = (16, 16),
                       num_cameras: int = 0, sie_coe: float = 3.0, pretrain_path: str = "") -> ViTBackbone:
    """The TransReID-style ViT: from a config (``MODEL.BACKBONE.VIT.*``, ``PRETRAIN(_PATH)``,
    ``INPUT.SIZE_TRAIN``) or from plain arguments.

    Args:
        image_size: input (height, width).
        arch: a key of :data:`VIT_ARCHS` ("vit_b_16", ...).
        stride: patch-embedding stride (h, w); smaller than the patch = overlapping patches.
        num_cameras: rows of the SIE camera table (0 = no SIE).
        sie_coe: SIE scale.
        pretrain_path: torchvision ImageNet weights to load ("" = random initialisation).

    Returns:
        :class:`ViTBackbone`.
    """
    patch, layers, heads, hidden, mlp, _ = _arch_spec(arch)
    backbone = ViTBackbone(image_size, patch, layers, heads, hidden, mlp, stride=stride,
                           num_cameras=num_cameras, sie_coe=sie_coe)
    if pretrain_path:
        backbone.load_torchvision_state_dict(_read_state_dict(pretrain_path, arch), pretrain_path)
    return backbone
