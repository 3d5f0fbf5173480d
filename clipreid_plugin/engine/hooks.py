"""Standard training hooks: timing, LR scheduling, checkpoints, evaluation, writers."""

import logging
import os
import re
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch

from clipreid_plugin.utils import comm
from clipreid_plugin.utils.checkpoint import Checkpointer
from clipreid_plugin.utils.events import CommonMetricPrinter, EventWriter

from .train_loop import HookBase

__all__ = ["IterationTimer", "LRScheduler", "PeriodicCheckpointer", "EvalHook", "PeriodicWriter"]


class IterationTimer(HookBase):
    """Record the duration of every step as the ``time`` scalar and log totals at the end."""

    def __init__(self):
        self._step_start = 0.0
        self._train_start = 0.0
        self._total_step_time = 0.0

    def before_train(self):
        self._train_start = time.perf_counter()

    def before_step(self):
        self._step_start = time.perf_counter()

    def after_step(self):
        dt = time.perf_counter() - self._step_start
        self._total_step_time += dt
        if comm.is_main_process():
            self.trainer.storage.put_scalar("time", dt)

    def after_train(self):
        total = time.perf_counter() - self._train_start
        logging.getLogger(__name__).info(
            f"Training took {total:.1f} s ({self._total_step_time:.1f} s in optimisation steps)."
        )


class LRScheduler(HookBase):
    """Step the LR scheduler at the start of each epoch or after each iteration.

    The scheduler's ``unit`` attribute (``"epoch"`` or ``"iter"``, from SOLVER.SCHED.UNIT)
    decides. Per-epoch stepping happens *before* the epoch, as the reference CLIP-ReID does
    (``scheduler.step(epoch)`` with 1-based epochs).

    Args:
        optimizer: the optimizer whose first group's LR is logged as ``lr``.
        scheduler: a torch LRScheduler with a ``unit`` attribute.
    """

    def __init__(self, optimizer, scheduler):
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.unit = getattr(scheduler, "unit", "epoch")

    def before_epoch(self):
        if self.unit == "epoch":
            with warnings.catch_warnings():
                # stepping before the epoch's first optimizer.step() is the intended order here
                warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                self.scheduler.step()

    def before_step(self):
        if comm.is_main_process():
            self.trainer.storage.put_scalar("lr", self.optimizer.param_groups[0]["lr"], smoothing_hint=False)

    def after_step(self):
        if self.unit == "iter":
            self.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """Save a resumable checkpoint every ``period`` epochs and after the last epoch.

    Files are ``model_{epoch:04d}.pth`` (1-based epoch just finished) and ``model_final.pth``;
    only the newest ``max_to_keep`` periodic files are kept (the final one always stays).

    Args:
        checkpointer: the Checkpointer (holds model, optimizer, scheduler, trainer state).
        period: in epochs.
        max_to_keep: number of periodic checkpoints to keep (None = all).
    """

    def __init__(self, checkpointer: Checkpointer, period: int, max_to_keep: Optional[int] = 2):
        self.checkpointer = checkpointer
        self.period = max(int(period), 1)
        self.max_to_keep = max_to_keep
        self._recent: List[str] = []

    def after_epoch(self):
        done = self.trainer.epoch + 1
        is_last = done >= self.trainer.max_epochs
        if done % self.period != 0 and not is_last:
            return
        # the trainer state must point at the *next* epoch, where a resumed run starts
        self.trainer.epoch = done
        try:
            path = self.checkpointer.save("model_final" if is_last else f"model_{done:04d}")
        finally:
            self.trainer.epoch = done - 1
        if path and not is_last:
            self._recent.append(path)
            if self.max_to_keep is not None:
                while len(self._recent) > self.max_to_keep:
                    old = self._recent.pop(0)
                    if os.path.exists(old):
                        os.remove(old)


class EvalHook(HookBase):
    """Run ``eval_function`` every ``period`` epochs and after the last epoch.

    Results (``{dataset: {metric: value}}``) are logged to the event storage as
    ``dataset/metric`` scalars on the main process.

    Args:
        period: in epochs (0 = only after the last epoch).
        eval_function: called with no argument; returns the nested results dict.
    """

    def __init__(self, period: int, eval_function: Callable[[], Dict]):
        self.period = int(period)
        self.eval_function = eval_function
        self.last_results: Dict = {}

    def _do_eval(self):
        results = self.eval_function()
        if comm.is_main_process() and results:
            flat = {}
            for ds, metrics in results.items():
                for k, v in metrics.items():
                    if isinstance(v, (int, float)):
                        flat[f"{ds}/{k}"] = v
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
        self.last_results = results
        comm.synchronize()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def after_epoch(self):
        done = self.trainer.epoch + 1
        is_last = done >= self.trainer.max_epochs
        if is_last or (self.period > 0 and done % self.period == 0):
            self._do_eval()


class PeriodicWriter(HookBase):
    """Call the writers every ``period`` iterations and at the end of each epoch.

    Args:
        writers: EventWriter instances (console printer, JSON, TensorBoard).
        period: in iterations.
    """

    def __init__(self, writers: List[EventWriter], period: int = 20):
        self.writers = writers
        self.period = max(int(period), 1)

    def after_step(self):
        it_in_epoch = self.trainer.iter - self.trainer.storage.epoch_start_iter + 1
        if it_in_epoch % self.period == 0 or it_in_epoch == self.trainer.storage.iters_this_epoch:
            for w in self.writers:
                w.write()

    def after_epoch(self):
        # evaluation results logged by EvalHook in after_epoch go to the JSON/TensorBoard files
        for w in self.writers:
            if not isinstance(w, CommonMetricPrinter):
                w.write()

    def after_train(self):
        for w in self.writers:
            w.write()
            w.close()
