"""Local torchvision ImageNet weights: where torchvision keeps them and a clear error when absent."""

import os

import torchvision

from clipreid_plugin.utils.errors import InputFileError

__all__ = ["torchvision_weights_file_name", "local_torchvision_weights"]


def torchvision_weights_file_name(weights_enum_name: str) -> str:
    """The file name torchvision caches ``<weights_enum_name>.IMAGENET1K_V1`` under.

    Args:
        weights_enum_name: e.g. ``"ResNet50_Weights"``, ``"ViT_B_16_Weights"``.

    Returns:
        e.g. ``"resnet50-0676ba61.pth"``.
    """
    return getattr(torchvision.models, weights_enum_name).IMAGENET1K_V1.url.rsplit("/", 1)[-1]


def local_torchvision_weights(path: str, weights_enum_name: str, builder: str, what: str) -> str:
    """Expand ``path`` and check that the weights file exists (nothing is downloaded at run time).

    Args:
        path: ``MODEL.BACKBONE.PRETRAIN_PATH`` (``~`` and environment variables are expanded).
        weights_enum_name: torchvision weights enum of the architecture (for the cache file name).
        builder: torchvision builder function name, e.g. ``"resnet50"`` (for the message).
        what: the config value that chose the architecture, e.g. ``"DEPTH '50x'"`` (for the message).

    Returns:
        The expanded path.

    Raises:
        FileNotFoundError: naming the file torchvision would cache and how to obtain it.
    """
    path = os.path.expandvars(os.path.expanduser(path))
    if not os.path.isfile(path):
        name = torchvision_weights_file_name(weights_enum_name)
        raise InputFileError(
            f"MODEL.BACKBONE.PRETRAIN_PATH {path!r} does not exist. It must be a local torchvision state dict for "
            f"{what}; `python tools/fetch_weights.py {builder}` downloads it (checksum verified) to "
            f"~/.cache/torch/hub/checkpoints/{name}, where the configs read it (nothing is "
            f"downloaded at run time). Or train from random weights with MODEL.BACKBONE.PRETRAIN False."
        )
    return path
