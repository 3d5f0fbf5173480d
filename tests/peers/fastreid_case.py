"""Reading a fast-reid peer case (../shared/reference/peers) for a replay here: config, weights, inputs.

Helpers shared by the peer-parity tests (no assertions): the case's own config (its ``cfg.dump()``),
our config built from the fast-reid keys this toolkit shares, the peer's weights filled by
``peer_weights.fill`` and renamed through the fast-reid checkpoint converter's mapping (the path a
user's model-zoo file takes), and the model input as fast-reid computes it.
"""

import importlib.util
import os
from typing import Dict, List, Tuple

import numpy as np
import torch
import yaml
from torch import nn

from clipreid_plugin.config import get_cfg
from clipreid_plugin.modeling.fastreid_checkpoint import convert_fastreid_state_dict

# fast-reid MODEL.BACKBONE keys that are ours too, same names and meanings
SHARED_BACKBONE_KEYS = ("NAME", "DEPTH", "LAST_STRIDE", "NORM", "WITH_IBN", "WITH_SE", "WITH_NL")


def load_case(reference_dir: str, name: str, dtype: str) -> dict:
    """The case file ``peers/[float64/]<name>.pt`` (skips the calling test when absent)."""
    import pytest

    path = os.path.join(reference_dir, "peers", "float64" if dtype == "float64" else "", f"{name}.pt")
    if not os.path.isfile(path):
        pytest.skip(f"peer case not found: {path}")
    return torch.load(path, weights_only=True)


def peer_weights_module(reference_dir: str):
    """The reference's ``peer_weights.py`` (numpy only), imported from its folder."""
    path = os.path.join(reference_dir, "peers", "peer_weights.py")
    spec = importlib.util.spec_from_file_location("peer_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peer_config(case: dict) -> dict:
    """The peer's full config (``meta.config_yaml``) as nested dicts."""
    return yaml.safe_load(case["meta"]["config_yaml"])


def backbone_cfg(case: dict):
    """Our config with the case's fast-reid ``MODEL.BACKBONE`` keys (no pretraining)."""
    theirs = peer_config(case)["MODEL"]["BACKBONE"]
    cfg = get_cfg()
    for key in SHARED_BACKBONE_KEYS:
        setattr(cfg.MODEL.BACKBONE, key, theirs[key])
    cfg.MODEL.BACKBONE.PRETRAIN = False
    return cfg


def peer_state_dict(case: dict, peer_weights, dtype: torch.dtype) -> Tuple[Dict[str, torch.Tensor], Dict[str, float]]:
    """The peer's state dict regenerated from (seed, name), in ``dtype``, and its per-tensor digests."""
    weights = case["weights"]
    arrays = peer_weights.fill(weights["shapes"], weights["seed"])
    sd = {k: torch.from_numpy(np.array(a)).to(dtype if a.dtype == np.float64 else torch.int64)
          for k, a in arrays.items()}
    return sd, dict(peer_weights.digest(arrays))


def load_peer_weights(model: nn.Module, sd: Dict[str, torch.Tensor]) -> List[str]:
    """Rename ``sd`` (fast-reid names) through the checkpoint converter's mapping and load it strictly.

    Returns:
        The peer keys with no counterpart in ``model`` (e.g. the heads, for a backbone-only model).
    """
    converted, unmatched = convert_fastreid_state_dict(sd, model)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in converted.items() if k in own}, strict=True)
    return unmatched


def model_input(case: dict, dtype: torch.dtype) -> torch.Tensor:
    """What fast-reid's Baseline feeds its backbone: ``(pixels - PIXEL_MEAN) / PIXEL_STD``.

    fast-reid keeps the mean / std as buffers made by ``torch.Tensor(list)`` (float32) and moved with
    the model (``.to(float64)``): float64 cases normalise with float32-rounded constants.
    """
    cfg = peer_config(case)["MODEL"]
    mean = torch.tensor(cfg["PIXEL_MEAN"], dtype=torch.float32).to(dtype).view(1, -1, 1, 1)
    std = torch.tensor(cfg["PIXEL_STD"], dtype=torch.float32).to(dtype).view(1, -1, 1, 1)
    return (case["inputs"]["pixels"].to(dtype) - mean) / std
