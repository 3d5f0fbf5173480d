"""The normalisation layer a CNN backbone's ``MODEL.BACKBONE.NORM`` names (fast-reid's key)."""

from torch import nn

from clipreid_plugin.utils.errors import ConfigError

__all__ = ["NORMS", "norm_layer"]

# MODEL.BACKBONE.NORM -> layer class. fast-reid's "GhostBN", "FrozenBN" and "GN" are not offered:
# no shipped fast-reid config uses them.
NORMS = {"BN": nn.BatchNorm2d, "syncBN": nn.SyncBatchNorm}


def norm_layer(norm: str, channels: int) -> nn.Module:
    """A 2-d normalisation layer of ``channels`` channels (weight 1, bias 0: torch's init, as fast-reid's).

    Args:
        norm: ``"BN"`` (BatchNorm2d) or ``"syncBN"`` (SyncBatchNorm: synchronised over processes under DDP,
            plain batch norm in one process).
        channels: number of channels.

    Raises:
        ConfigError: another name.
    """
    if norm not in NORMS:
        raise ConfigError(f"MODEL.BACKBONE.NORM {norm!r} is not supported; valid: {', '.join(NORMS)}.")
    return NORMS[norm](channels)
