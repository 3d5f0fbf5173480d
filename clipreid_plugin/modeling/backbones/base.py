"""The backbone contract: what every registered backbone is and returns.

A backbone is an ``nn.Module`` built by a ``BACKBONE_REGISTRY`` function from the config. It
declares the widths of its outputs and whether it reads camera / view ids, and its forward
returns one :class:`BackboneOutput`. A meta-architecture reads only the fields it needs, so
every backbone works under every meta-architecture whose needs its fields cover:

========================  =========  ==============  =========
backbone                  feature    intermediate    projected
========================  =========  ==============  =========
ResNet / ResNeSt          (B,C,h,w)  -               -
OSNet / OSNet-AIN         (B,C,h,w)  -               -
torchvision ViT           (B,C)      -               -
CLIP ModifiedResNet       (B,C,h,w)  (B,C',h',w')    (B,D)
CLIP ViT                  (B,C)      (B,C)           (B,D)
========================  =========  ==============  =========
"""

import contextlib
from typing import Iterator, NamedTuple, Optional

import torch
from torch import nn

from clipreid_plugin.utils.errors import ConfigError

__all__ = ["BackboneOutput", "Backbone", "global_pool", "eval_mode", "check_ids_in_range"]


class BackboneOutput(NamedTuple):
    """What a backbone's forward returns.

    Attributes:
        feature: the main feature: a map (B, C, h, w) or a vector (B, C); C is the backbone's
            ``out_features``.
        intermediate: an earlier stage's feature, map or vector, or None (CLIP ViT: the class
            token before the last block; CLIP ModifiedResNet: the layer3 map).
        projected: (B, D) feature in a joint image-text space, or None; D is the backbone's
            ``proj_features``.
    """

    feature: torch.Tensor
    intermediate: Optional[torch.Tensor] = None
    projected: Optional[torch.Tensor] = None


class Backbone(nn.Module):
    """Base class documenting the contract (a backbone may also just set these attributes).

    Attributes:
        out_features: channels C of ``BackboneOutput.feature``.
        proj_features: width D of ``BackboneOutput.projected`` (0 = the backbone has none).
        uses_camids / uses_viewids: whether the forward reads camera / view ids (side
            information embeddings); the meta-architecture then passes the batch's ids.
        prefers_channels_last: a convolutional backbone that runs faster on channels-last
            tensors on a GPU (``MODEL.CHANNELS_LAST`` "auto" then converts it and its inputs).
        input_memory_format: the memory format images are given in (set by ``build_model``).
    """

    out_features: int = 0
    proj_features: int = 0
    uses_camids: bool = False
    uses_viewids: bool = False
    prefers_channels_last: bool = False
    input_memory_format: torch.memory_format = torch.preserve_format

    def forward(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> BackboneOutput:
        """Args:
            images: (B, 3, H, W) normalised images.
            camids, viewids: (B,) 0-based ids, or None: then no side information is added
                (CLIP-ReID's stage 1 encodes images without it).

        Returns:
            BackboneOutput.
        """
        raise NotImplementedError

    def describe(self) -> str:
        """Returns: a short name of the architecture actually built (for tables), e.g. "ResNet-50"."""
        return type(self).__name__


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling of a (B, C, h, w) map; a (B, C) vector passes unchanged."""
    return x.mean(dim=(2, 3)) if x.dim() == 4 else x


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Context manager: put ``module`` in eval mode and restore every sub-module's mode after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


def check_ids_in_range(ids: torch.Tensor, n: int, what: str, hint: str) -> None:
    """Check side-information ids (camera / view) against the size of an embedding table.

    The check reads the ids on the host: free for the loader's CPU tensors, but a device sync
    every step (and a graph break under ``torch.compile``) for ids already on an accelerator,
    so it runs only on CPU tensors and not while compiling. An id out of range is then left to
    fail in the table lookup itself. Backbones call it before moving the ids to their device.

    Args:
        ids: (B,) 0-based ids.
        n: number of rows of the table (valid ids are 0..n-1).
        what: "camera" or "view" (for the message).
        hint: what to fix, ending the message.

    Raises:
        ConfigError: an id outside 0..n-1.
    """
    if ids.device.type == "cpu" and not torch.compiler.is_compiling() and ids.numel() and \
            (int(ids.min()) < 0 or int(ids.max()) >= n):
        raise ConfigError(f"A {what} id in the batch ({ids.tolist()}) is outside 0..{n - 1}: {hint}")
