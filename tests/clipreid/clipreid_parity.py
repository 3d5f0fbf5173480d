"""The reference case replayed through CLIPReID, in the form the CLIP-ReID tests use.

Thin wrappers of :mod:`clipreid_plugin.interop.parity` (the library behind
``tools/check_parity.py``), so the tests and the user tool run the same replay.
"""

from typing import Dict, Tuple

import torch

from parity_harness import case_replay as parity
from clipreid_plugin.plugins.clipreid.clipreid import CLIPReID


def reference_cfg(case: dict):
    """This toolkit's config for the reference case (its ``meta.config`` translated)."""
    cfg = parity.parity_cfg(case["meta"], case["tiny_clip_path"])
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def build_reference_model(case: dict) -> CLIPReID:
    """CLIPReID for the case with the reference state dict loaded (through the converter)."""
    return parity.build_reference_model(reference_cfg(case), case["state_dict"])


def run_reference_steps(case: dict) -> Tuple[Dict[str, Tuple[torch.Tensor, torch.Tensor]], CLIPReID]:
    """Replay the case (eval, text side, one stage-1 step, one stage-2 forward/backward).

    Returns:
        ({output name: (ours, reference)} for every output the model produces, the model after
        the steps). Names are the case's flattened output names (``stage2_grads.<param>``, ...).
    """
    ours, model, _ = parity.replay_case(case, case["tiny_clip_path"])
    refs = parity.flatten_outputs(case["outputs"])
    return {k: (ours[k], refs[k]) for k in refs if k in ours}, model
