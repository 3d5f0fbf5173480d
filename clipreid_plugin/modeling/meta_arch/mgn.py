"""MGN: Multiple Granularity Network (Wang et al. 2018), with fast-reid's branches and losses.

A ResNet-layout backbone (``conv1 bn1 relu maxpool layer1..4``, e.g. ``build_resnet_backbone``)
is cut after ``layer3[0]``: ``backbone`` = the stem, layer1, layer2, layer3[0]. Three branches
follow, each a copy of ``layer3[1:]`` and of ``layer4`` (branch 1, global: layer4 as built) or of
``layer4`` with stride 1 (branches 2 and 3: the part branches keep the map's height). Branch 2's
map is cut into 2 horizontal stripes, branch 3's into 3 (``torch.chunk`` along the height). Eight
heads (``MODEL.HEADS.NAME``, each its own weights) pool and embed: ``b1_head``, ``b2_head``,
``b21_head``, ``b22_head``, ``b3_head``, ``b31_head``, ``b32_head``, ``b33_head``. Module and
parameter names are fast-reid's, so fast-reid MGN checkpoints load unchanged.

Losses (fast-reid's composition): each loss that reads ``cls_outputs`` (CrossEntropyLoss) is
applied to every head x 1/8 (``loss_cls_b1`` ... ``loss_cls_b33``); each loss that reads
``triplet_features`` (TripletLoss; CircleLoss / Cosface likewise) x 0.2 to the features of b1,
b2, b3, cat(b21, b22) and cat(b31, b32, b33) (``loss_triplet_b1``, ``_b2``, ``_b3``, ``_b22``,
``_b33``). Evaluation returns cat(b1, b2, b3, b21, b22, b31, b32, b33).

The part stripes need a map height that ``torch.chunk`` cuts into exactly 2 and 3 parts (e.g.
64-pixel-high inputs give 4 rows, which chunk cuts into 2 parts, not 3): such an input size is a
ConfigError when the model is built, not a crash in training.
"""

import copy
import math
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from clipreid_plugin.config import configurable
from clipreid_plugin.utils.errors import ConfigError
from ..backbones import build_backbone
from ..heads import build_heads
from ..losses import build_losses
from .build import META_ARCH_REGISTRY

__all__ = ["MGN", "HEAD_NAMES", "chunk_count"]

HEAD_NAMES = ("b1", "b2", "b21", "b22", "b3", "b31", "b32", "b33")
# Evaluation feature order (fast-reid's): global features first, then the stripes.
EVAL_ORDER = ("b1", "b2", "b3", "b21", "b22", "b31", "b32", "b33")
# Metric-loss groups: name -> heads whose features are concatenated.
METRIC_GROUPS = (("b1", ("b1",)), ("b2", ("b2",)), ("b3", ("b3",)), ("b22", ("b21", "b22")),
                 ("b33", ("b31", "b32", "b33")))
CLS_WEIGHT = 0.125  # 1 / number of heads
METRIC_WEIGHT = 0.2  # 1 / number of metric groups
_RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def chunk_count(size: int, parts: int) -> int:
    """Returns: how many pieces ``torch.chunk`` cuts a dimension of ``size`` into when asked for ``parts``."""
    return math.ceil(size / math.ceil(size / parts)) if size > 0 else 0


def _stride_one(layer: nn.Module) -> nn.Module:
    """A copy of a ResNet stage whose first block does not downsample (fast-reid's ``res_p_conv5``)."""
    layer = copy.deepcopy(layer)
    for module in layer[0].modules():  # the strided 3x3 (conv2 of a bottleneck, conv1 of a basic block), the shortcut
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
    return layer


@META_ARCH_REGISTRY.register()
class MGN(nn.Module):
    """See the module docstring. Config: ``MODEL.BACKBONE.*`` (a ResNet-layout backbone),
    ``MODEL.HEADS.*`` (each of the eight heads), ``MODEL.LOSSES.*``, ``INPUT.SIZE_TRAIN`` /
    ``SIZE_TEST`` (checked against the stripes).

    Args:
        backbone: the built ResNet-layout backbone (cut here; its layer4 and after are reused).
        head_factory: called once per head with the feature width, returns a head.
        losses: the loss modules (each with ``reads``).
        input_sizes: (H, W) sizes the model will see, checked against the stripes.
    """

    @configurable
    def __init__(self, *, backbone: nn.Module, head_factory, losses: nn.ModuleList,
                 input_sizes: Sequence[Tuple[int, int]] = ()):
        super().__init__()
        missing = [p for p in _RESNET_PARTS if not hasattr(backbone, p)]
        if missing:
            raise ConfigError(f"MGN cuts a ResNet-layout backbone (build_resnet_backbone); "
                              f"{type(backbone).__name__} has no {', '.join(missing)}.")
        self.backbone = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool,
                                      backbone.layer1, backbone.layer2, backbone.layer3[0])
        res_conv4 = nn.Sequential(*backbone.layer3[1:])
        feat_dim = backbone.out_features
        # registered in fast-reid's order (each branch, then its heads): parameter order = a fast-reid state dict's
        self.b1 = nn.Sequential(copy.deepcopy(res_conv4), copy.deepcopy(backbone.layer4))
        self.b1_head = head_factory(feat_dim)
        self.b2 = nn.Sequential(copy.deepcopy(res_conv4), _stride_one(backbone.layer4))
        self.b2_head, self.b21_head, self.b22_head = (head_factory(feat_dim) for _ in range(3))
        self.b3 = nn.Sequential(copy.deepcopy(res_conv4), _stride_one(backbone.layer4))
        self.b3_head, self.b31_head, self.b32_head, self.b33_head = (head_factory(feat_dim) for _ in range(4))
        for loss in losses:
            if getattr(loss, "reads", None) not in ("cls_outputs", "triplet_features"):
                raise ConfigError(f"MGN composes losses per branch and cannot use {type(loss).__name__} "
                                  f"(MODEL.LOSSES.NAMES): it reads neither the heads' cls_outputs nor their "
                                  f"triplet_features.")
        self.losses = losses
        for size in input_sizes:
            self._check_size(tuple(size))

    @classmethod
    def from_config(cls, cfg):
        return {"backbone": build_backbone(cfg), "head_factory": lambda dim: build_heads(cfg, dim),
                "losses": build_losses(cfg), "input_sizes": (tuple(cfg.INPUT.SIZE_TRAIN), tuple(cfg.INPUT.SIZE_TEST))}

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (inputs are moved there)."""
        return next(self.parameters()).device

    def _check_size(self, size: Tuple[int, int]) -> None:
        """ConfigError when an input of ``size`` gives a part map that chunk cannot cut in 2 and 3."""
        probe = copy.deepcopy(self.backbone).to("meta").eval()
        with torch.no_grad():
            height = probe(torch.empty(1, 3, *size, device="meta")).shape[2]
        self._check_height(height, f"INPUT size {size[0]}x{size[1]}")

    @staticmethod
    def _check_height(height: int, what: str) -> None:
        if chunk_count(height, 2) != 2 or chunk_count(height, 3) != 3:
            raise ConfigError(f"MGN: {what} gives a {height}-row part feature map, which cannot be cut into 2 and 3 "
                              f"stripes; use an input height whose map has 3 or at least 5 rows (a ResNet maps H "
                              f"pixels to ceil(H/16) rows: e.g. 96, 256 or 384).")

    def branch_maps(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Returns: the feature map each head pools, by head name."""
        shared = self.backbone(images)
        b2, b3 = self.b2(shared), self.b3(shared)
        self._check_height(b3.shape[2], f"an input of {images.shape[2]}x{images.shape[3]}")
        b21, b22 = torch.chunk(b2, 2, dim=2)
        b31, b32, b33 = torch.chunk(b3, 3, dim=2)
        return {"b1": self.b1(shared), "b2": b2, "b21": b21, "b22": b22, "b3": b3, "b31": b31, "b32": b32,
                "b33": b33}

    def training_outputs(self, batch: Dict[str, torch.Tensor]):
        """Every head's training outputs and the targets.

        Returns:
            ({head name: the head's outputs dict}, targets (B,)).
        """
        targets = batch["targets"].to(self.device, non_blocking=True)
        maps = self.branch_maps(batch["images"].to(self.device, non_blocking=True))
        return {n: getattr(self, f"{n}_head")(maps[n], targets=targets) for n in HEAD_NAMES}, targets

    def losses_of(self, outputs: Dict[str, Dict[str, object]], targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The weighted losses of :meth:`training_outputs`' dicts (fast-reid's composition)."""
        if any(out["cls_outputs"][0] is None for out in outputs.values()):
            raise ConfigError("The model has no classifier: MODEL.HEADS.NUM_CLASSES is 0. Set it to the number of "
                              "training identities (the trainer fills it from the training set).")
        result: Dict[str, torch.Tensor] = {}
        for loss in self.losses:
            if loss.reads == "cls_outputs":
                groups: List = [(n, {"cls_outputs": outputs[n]["cls_outputs"]}) for n in HEAD_NAMES]
                weight = CLS_WEIGHT
            else:
                groups = [(g, {"triplet_features": [torch.cat([outputs[n]["triplet_features"][0] for n in heads],
                                                              dim=1)]}) for g, heads in METRIC_GROUPS]
                weight = METRIC_WEIGHT
            for group, inputs in groups:
                for name, value in loss(inputs, targets).items():
                    key = f"{name}_{group}"
                    if key in result:
                        raise ConfigError(f"Two losses in MODEL.LOSSES.NAMES both return {name!r}; list each once.")
                    result[key] = value * weight
        return result

    def forward(self, batch: Dict[str, torch.Tensor]):
        """Args: batch with ``images`` (B, 3, H, W) normalised and, for training, ``targets``.

        Returns:
            Training: the weighted losses. Eval: cat of the eight heads' features (B, 8 D).
        """
        if self.training:
            outputs, targets = self.training_outputs(batch)
            return self.losses_of(outputs, targets)
        maps = self.branch_maps(batch["images"].to(self.device, non_blocking=True))
        return torch.cat([getattr(self, f"{n}_head")(maps[n]) for n in EVAL_ORDER], dim=1)
