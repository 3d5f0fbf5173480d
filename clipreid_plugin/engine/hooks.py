"""Training hooks: timing, LR scheduling, checkpoints, evaluation, writers, and the hook registry.

Extra hooks are chosen by name in ``TRAINER.HOOKS`` from :data:`HOOK_REGISTRY` (built as
``cls(cfg)``). A :class:`PhaseHook` among them trains a phase of its own before the main loop
(CLIP-ReID's prompt learning is one), through the same step machinery as the main loop.
"""

import json
import logging
import os
import re
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch

from clipreid_plugin.utils import comm
from clipreid_plugin.utils.checkpoint import Checkpointer
from clipreid_plugin.utils.file_io import atomic_write_text
from clipreid_plugin.utils.events import CommonMetricPrinter, EventWriter
from clipreid_plugin.utils.registry import Registry

from .train_loop import HookBase, SimpleTrainer

__all__ = ["HOOK_REGISTRY", "build_hook", "IterationTimer", "LRScheduler", "PeriodicCheckpointer", "EvalHook",
           "PeriodicWriter", "PhaseHook"]

HOOK_REGISTRY = Registry("HOOK", training_keys=["TRAINER.HOOKS"])
HOOK_REGISTRY.__doc__ = """
Hooks that a config can name in ``TRAINER.HOOKS``; a registered class is constructed as
``cls(cfg)`` (the configurable convention, :mod:`clipreid_plugin.config.configurable`) and reaches
the trainer through ``self.trainer`` (a :class:`~clipreid_plugin.engine.TrainerProtocol`) once
registered.
"""


def build_hook(cfg, name: str) -> HookBase:
    """Build the hook registered as ``name`` (one entry of ``TRAINER.HOOKS``).

    Returns:
        The hook.
    """
    hook = HOOK_REGISTRY.build(name, cfg, key="TRAINER.HOOKS")
    if not isinstance(hook, HookBase):
        raise TypeError(f"TRAINER.HOOKS entry {name!r} built a {type(hook).__name__}, not a HookBase.")
    return hook


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
    the Checkpointer keeps the newest ``SOLVER.CHECKPOINT_MAX_KEEP`` periodic files.

    Args:
        checkpointer: the Checkpointer (holds model, optimizer, scheduler, trainer state).
        period: in epochs.
    """

    def __init__(self, checkpointer: Checkpointer, period: int):
        self.checkpointer = checkpointer
        self.period = max(int(period), 1)

    def after_epoch(self):
        done = self.trainer.epoch + 1
        is_last = done >= self.trainer.max_epochs
        if done % self.period != 0 and not is_last:
            return
        self.trainer.check_weights_finite()  # never save a diverged model over a good checkpoint
        # the trainer state must point at the *next* epoch, where a resumed run starts
        self.trainer.epoch = done
        try:
            self.checkpointer.save("model_final" if is_last else f"model_{done:04d}")
        finally:
            self.trainer.epoch = done - 1


class EvalHook(HookBase):
    """Run ``eval_function`` every ``period`` epochs and after the last epoch.

    Results (``{dataset: {metric: value}}``) are logged to the event storage as
    ``dataset/metric`` scalars on the main process, and recorded per epoch in
    ``evaluations.json`` of the run folder. An evaluation is part of the run's state: when a run
    stopped after the checkpoint of an epoch but before that epoch's evaluation finished (the
    final one included), ``--resume`` runs it first; a finished run returns its recorded results.

    Args:
        period: in epochs (0 = only after the last epoch).
        eval_function: called with no argument; returns the nested results dict.
        record_dir: folder of ``evaluations.json`` (None = no record).
    """

    RECORD_FILE = "evaluations.json"

    def __init__(self, period: int, eval_function: Callable[[], Dict], record_dir: Optional[str] = None):
        self.period = int(period)
        self.eval_function = eval_function
        self.record_path = os.path.join(record_dir, self.RECORD_FILE) if record_dir else None
        self.last_results: Dict = {}

    def _records(self) -> Dict[str, Dict]:
        if not self.record_path or not os.path.isfile(self.record_path):
            return {}
        with open(self.record_path) as f:
            return json.load(f)

    def _due(self, epochs_done: int) -> bool:
        return epochs_done >= self.trainer.max_epochs or (self.period > 0 and epochs_done % self.period == 0)

    def _do_eval(self, epochs_done: int):
        results = self.eval_function()
        if comm.is_main_process() and results:
            flat = {}
            for ds, metrics in results.items():
                for k, v in metrics.items():
                    if isinstance(v, (int, float)):
                        flat[f"{ds}/{k}"] = v
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
            if self.record_path:
                records = self._records()
                records[str(epochs_done)] = results
                atomic_write_text(self.record_path, json.dumps(records, indent=1) + "\n")
        self.last_results = results
        comm.synchronize()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def before_train(self):
        done = self.trainer.start_epoch  # epochs finished before this process started
        if done == 0 or not self._due(done):
            return
        recorded = comm.all_gather(self._records().get(str(done)) if comm.is_main_process() else None)[0]
        if recorded is not None:
            self.last_results = recorded if comm.is_main_process() else {}
            return
        logging.getLogger(__name__).info(f"The evaluation after epoch {done} had not finished when the run stopped: "
                                         f"evaluating now.")
        self._do_eval(done)

    def after_epoch(self):
        done = self.trainer.epoch + 1
        if self._due(done):
            self._do_eval(done)


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


class PhaseHook(HookBase):
    """A hook that trains a phase of its own in ``before_train``, before the main loop.

    Subclasses set :attr:`phase_name` and :attr:`num_epochs` (the phase's length, part of the
    trainer's schedule: the trainer logs it and counts it when checking that a run trains
    something), and call :meth:`run_loop` to train: an inner :class:`SimpleTrainer` with the
    main loop's step machinery (autocast, grad scaler, gradient clipping, the non-finite stop),
    its own LR schedule hook and writers (progress, ETA, ``metrics.json`` records marked with
    the phase).

    Attributes:
        phase_name: short name of the phase ("stage1"), used in logs and metrics.
        num_epochs: epochs the phase trains when it runs (0 when it is skipped).
    """

    phase_name = "phase"
    num_epochs = 0

    def run_loop(self, model, data_loader, optimizer, scheduler, start_epoch: int,
                 hooks: Optional[List[HookBase]] = None, step_state: Optional[Dict] = None) -> SimpleTrainer:
        """Train ``model`` (returns a loss dict per batch) for epochs ``start_epoch .. num_epochs - 1``.

        Args:
            model: callable module returning the phase's loss dict for a batch.
            data_loader: epochs of batches (``set_epoch``, ``__len__``).
            optimizer: the phase's optimizer.
            scheduler: its LR scheduler (stepped like the main loop's, by ``unit``).
            start_epoch: first epoch to run (non-zero when resuming inside the phase).
            hooks: extra hooks of the inner loop (e.g. periodic checkpoints), run after the LR
                scheduler and before the writers.
            step_state: a saved :meth:`SimpleTrainer.step_state` (grad scaler, loss baseline)
                of the phase's loop, to continue from when resuming inside the phase.

        Returns:
            The inner trainer, after training.
        """
        outer = self.trainer
        cfg = outer.cfg
        loop = SimpleTrainer(model, data_loader, optimizer, cfg.SOLVER.CLIP_GRAD_NORM, outer.amp_dtype,
                             phase=self.phase_name, log_period=cfg.SOLVER.LOG_PERIOD_ITERS)
        loop.load_step_state(step_state or {})
        inner = [IterationTimer(), LRScheduler(optimizer, scheduler)] + list(hooks or [])
        if comm.is_main_process():
            writers = outer.build_writers(self.num_epochs * len(data_loader), len(data_loader), self.phase_name)
            inner.append(PeriodicWriter(writers, cfg.SOLVER.LOG_PERIOD_ITERS))
        loop.register_hooks(inner)
        loop.train(start_epoch, self.num_epochs)
        return loop
