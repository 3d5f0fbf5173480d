"""Configs of the user-tool tests: a tiny ResNet-18 model on small images.

A module of its own (not conftest.py): test modules import it by name, and ``conftest`` is not a
unique module name in this suite.
"""

import os

from clipreid_plugin.config import get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = (64, 32)  # (height, width) of the model input: small enough for fast CPU tests


def tiny_cfg(**overrides):
    """The SyntheticReID bag-of-tricks config with a random ResNet-18 at 64x32 on the CPU."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs/SyntheticReID/bagtricks_R18.yml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "INPUT.SIZE_TEST", list(SIZE), "INPUT.SIZE_TRAIN", list(SIZE),
                         "MODEL.HEADS.NUM_CLASSES", 5])
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    return cfg
