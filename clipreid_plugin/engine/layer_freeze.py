"""fast-reid's layer freeze on the module side: the named children in eval mode for the first iterations.

With ``MODEL.FREEZE_LAYERS`` and ``SOLVER.FREEZE_ITERS > 0`` fast-reid's ``LayerFreeze`` hook puts
the model's direct children whose names are listed (exact names: ``backbone``, ``b1``, ...) in
eval mode before every iteration below ``FREEZE_ITERS`` (their BatchNorm statistics stay), and
back in train mode from then on. The optimizer side (the frozen param groups are not stepped)
is :mod:`clipreid_plugin.solver.freeze`; both follow the iteration / step counters of a resumed
run, so a resumed run does not freeze again.

Unlike fast-reid, which switches the children once, the eval mode is re-applied before every
frozen iteration: an evaluation in between (which restores the whole model's train mode) does not
unfreeze them.
"""

import logging
from typing import Sequence

from clipreid_plugin.config.configurable import configurable
from clipreid_plugin.utils.checkpoint import unwrap_model

from .train_loop import HookBase

__all__ = ["LayerFreeze"]

logger = logging.getLogger(__name__)


class LayerFreeze(HookBase):
    """Keep the model's children named in ``freeze_layers`` in eval mode while ``iter < freeze_iters``.

    Args:
        freeze_layers: names of direct children of the model (``MODEL.FREEZE_LAYERS``; names
            that are no child are skipped with a log line, as fast-reid does).
        freeze_iters: number of iterations (``SOLVER.FREEZE_ITERS``).
    """

    @configurable
    def __init__(self, *, freeze_layers: Sequence[str], freeze_iters: int):
        self.freeze_layers = tuple(freeze_layers)
        self.freeze_iters = int(freeze_iters)
        self.is_frozen = False

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Arguments from ``MODEL.FREEZE_LAYERS`` and ``SOLVER.FREEZE_ITERS``."""
        return {"freeze_layers": tuple(cfg.MODEL.FREEZE_LAYERS), "freeze_iters": cfg.SOLVER.FREEZE_ITERS}

    def _children(self):
        model = unwrap_model(self.trainer.model)
        return [(name, module) for name, module in model.named_children() if name in self.freeze_layers]

    def before_train(self):
        children = {name for name, _ in unwrap_model(self.trainer.model).named_children()}
        missing = [n for n in self.freeze_layers if n not in children]
        if missing:
            logger.info(f"MODEL.FREEZE_LAYERS: {', '.join(missing)} is no child of the model; its modules stay in "
                        f"train mode (the optimizer still skips the parameters whose names match it).")

    def before_step(self):
        if self.trainer.iter < self.freeze_iters:
            for _, module in self._children():
                module.eval()
            if not self.is_frozen:
                self.is_frozen = True
                logger.info(f"Freeze layer group {', '.join(self.freeze_layers)} for {self.freeze_iters} iterations")
        elif self.is_frozen:
            for _, module in self._children():
                module.train()
            self.is_frozen = False
            logger.info(f"Open layer group {', '.join(self.freeze_layers)}")
