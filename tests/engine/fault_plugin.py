"""A test plugin that kills its own process at a chosen point, as a crash or ``kill -9`` would.

Configured by environment variables, inert without them:
* ``FAULT_EVAL=N``: the N-th evaluation of the process dies in the middle (after its epoch's
  checkpoint was written), once per ``FAULT_MARKER`` file;
* ``FAULT_RANK=R`` and ``FAULT_EPOCH=E``: rank R dies in the second step of epoch E (0-based),
  once per ``FAULT_MARKER`` file (not "on the first attempt": with several torchrun agents the
  restart counts differ between agents and ranks are reassigned at each rendezvous round).
"""

import os
import signal

from clipreid_plugin.engine import HOOK_REGISTRY, HookBase
from clipreid_plugin.evaluation import EVALUATOR_REGISTRY, ReidEvaluator
from clipreid_plugin.utils import comm

_EVALUATIONS = {"count": 0}


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


@EVALUATOR_REGISTRY.register()
class KillingReidEvaluator(ReidEvaluator):
    """The standard evaluation, killed halfway through its FAULT_EVAL-th run (once)."""

    def evaluate(self):
        _EVALUATIONS["count"] += 1
        marker = os.environ.get("FAULT_MARKER", "")
        if str(_EVALUATIONS["count"]) == os.environ.get("FAULT_EVAL") and marker and not os.path.exists(marker):
            open(marker, "w").close()
            _die()
        return super().evaluate()


@HOOK_REGISTRY.register()
class KillRankHook(HookBase):
    """Kills rank FAULT_RANK in the second step of epoch FAULT_EPOCH, once per FAULT_MARKER file."""

    def __init__(self, cfg):
        self.rank = int(os.environ.get("FAULT_RANK", "-1"))
        self.epoch = int(os.environ.get("FAULT_EPOCH", "-1"))
        self.marker = os.environ.get("FAULT_MARKER", "")

    def after_step(self):
        in_epoch = self.trainer.iter - self.trainer.storage.epoch_start_iter
        if comm.get_rank() == self.rank and self.trainer.epoch == self.epoch and in_epoch == 1 and \
                self.marker and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            _die()
