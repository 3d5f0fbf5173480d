"""A listed loss with weight 0 is a config error, not a silently dropped term.

torchreid's ``ImageTripletEngine`` skips a term whose weight is 0, and its default config sets
``loss.triplet.weight_x = 0``: ``loss.name triplet`` alone trains without the softmax term, and
nothing says so (peers/README.md). Here a loss is in the run exactly when it is named in
``MODEL.LOSSES.NAMES``, and its ``SCALE`` is its weight (torchreid's ``weight_x`` is
``MODEL.LOSSES.CE.SCALE``, ``weight_t`` is ``MODEL.LOSSES.TRI.SCALE``); a listed loss whose scale
is 0 would be computed and thrown away, so the run stops before it starts and says what to write.
"""

from clipreid_plugin.config import as_name_list, register_config_check
from clipreid_plugin.utils.errors import ConfigError

__all__ = ["LOSS_SCALE_KEYS", "check_listed_losses_have_weight"]

# registered loss name -> the key of its weight
LOSS_SCALE_KEYS = {"CrossEntropyLoss": "CE", "TripletLoss": "TRI"}


@register_config_check
def check_listed_losses_have_weight(cfg, training: bool) -> None:
    """Raise ConfigError when a loss of ``MODEL.LOSSES.NAMES`` has ``SCALE`` 0 (training runs only)."""
    if not training:
        return
    for name in as_name_list(cfg.MODEL.LOSSES.NAMES):
        node = LOSS_SCALE_KEYS.get(name)
        if node is None or node not in cfg.MODEL.LOSSES:
            continue
        scale = float(cfg.MODEL.LOSSES[node].SCALE)
        if scale == 0:
            raise ConfigError(
                f"MODEL.LOSSES.{node}.SCALE is 0 while {name} is in MODEL.LOSSES.NAMES: its term would be computed and "
                f"dropped (torchreid's default weight_x 0 trains so silently). Remove {name} from MODEL.LOSSES.NAMES to "
                f"train without it, or give MODEL.LOSSES.{node}.SCALE its weight (torchreid's weight_x / weight_t).")
