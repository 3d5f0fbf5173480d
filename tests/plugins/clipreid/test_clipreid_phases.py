"""CLIPREID.PHASES and CLIPREID.STAGE1.MAX_EPOCHS: one check, used by the config check and the hook."""

import pytest

from clipreid_plugin.config import ConfigError, get_cfg
from clipreid_plugin.plugins.clipreid.config import check_clipreid_config
from clipreid_plugin.plugins.clipreid.stage1 import CLIPReIDStage1Hook, check_phases


def _cfg(phases="both", epochs=2, hooks=("CLIPReIDStage1Hook",)):
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    cfg.CLIPREID.PHASES = phases
    cfg.CLIPREID.STAGE1.MAX_EPOCHS = epochs
    cfg.TRAINER.HOOKS = hooks
    return cfg


def test_unknown_phases_fail_in_the_check_and_the_hook():
    cfg = _cfg(phases="stage1")
    for fn in (check_phases, CLIPReIDStage1Hook, lambda c: check_clipreid_config(c, True)):
        with pytest.raises(ConfigError, match=r"CLIPREID.PHASES is 'stage1'; valid: 'both', 'stage2'"):
            fn(cfg)


def test_stage1_needs_epochs_only_when_it_runs():
    message = "CLIPREID.STAGE1.MAX_EPOCHS is 0; stage 1 needs at least one epoch"
    for fn in (check_phases, CLIPReIDStage1Hook, lambda c: check_clipreid_config(c, True)):
        with pytest.raises(ConfigError, match=message):
            fn(_cfg(epochs=0))
    check_phases(_cfg(phases="stage2", epochs=0))
    assert CLIPReIDStage1Hook(_cfg(phases="stage2", epochs=0)).num_epochs == 0
    check_clipreid_config(_cfg(epochs=0, hooks=()), True)  # no stage-1 hook: its epochs are not read
    check_phases(_cfg(epochs=0), check_epochs=False)
