"""Epoch-based training loop with hooks (after detectron2's ``engine/train_loop.py``).

A :class:`TrainerBase` runs epochs of iterations over a data loader and calls its hooks
around each stage. Everything that is not the optimisation step itself (LR scheduling,
checkpoints, evaluation, logging, CLIP-ReID's first phase) lives in a hook, so the loop stays
small and the order of those side effects is explicit in the hook list.

Hook call order::

    hook.before_train()
    for epoch in range(start_epoch, max_epochs):
        hook.before_epoch()
        for batch in data_loader:          # data_loader.set_epoch(epoch) first
            hook.before_step()
            trainer.run_step(batch)
            hook.after_step()
        hook.after_epoch()
    hook.after_train()
"""

import logging
import time
import weakref
from typing import Callable, Dict, List, Optional, Tuple

import torch

from clipreid_plugin.utils import comm
from clipreid_plugin.utils.device import autocast
from clipreid_plugin.utils.errors import ToolkitError, TrainingDivergedError
from clipreid_plugin.utils.events import EventStorage, get_event_storage

from .protocol import TrainerProtocol

__all__ = ["HookBase", "TrainerBase", "OptimizationStep", "LossMonitor", "SimpleTrainer", "check_weights_finite",
           "grads_params"]


class HookBase:
    """A hook runs code at fixed points of training.

    Attributes:
        trainer: a weak reference to the trainer, set by :meth:`TrainerBase.register_hooks`:
            what a hook may use of it is :class:`~clipreid_plugin.engine.TrainerProtocol` (the
            main loop's :class:`~clipreid_plugin.engine.DefaultTrainer`; the hooks of a phase's
            inner loop see that loop's :class:`SimpleTrainer`).

    Hooks with state that must survive ``--resume`` implement :meth:`state_dict` and
    :meth:`load_state_dict`; the trainer stores them in the checkpoint under the hook's class name.
    """

    trainer: "TrainerProtocol" = None

    def before_train(self):
        """Called once before the first epoch."""

    def after_train(self):
        """Called once after the last epoch (also after an exception, to release resources)."""

    def before_epoch(self):
        """Called at the start of every epoch."""

    def after_epoch(self):
        """Called at the end of every epoch."""

    def before_step(self):
        """Called before every iteration."""

    def after_step(self):
        """Called after every iteration."""

    def state_dict(self) -> Dict:
        """Returns: the hook's resumable state (empty by default)."""
        return {}

    def load_state_dict(self, state: Dict) -> None:
        """Restore the state produced by :meth:`state_dict`."""


class TrainerBase:
    """Runs epochs over ``self.data_loader`` and calls hooks; subclasses implement ``run_step``.

    Attributes:
        epoch: the current epoch (0-based).
        iter: the global iteration counter (0-based), ``epoch * iters_per_epoch + step``.
        start_epoch, max_epochs: the range of epochs :meth:`train` runs.
        storage: the EventStorage of the running loop.
        phase: name of the training phase this loop runs ("" for the main loop).
    """

    phase = ""

    def __init__(self):
        self._hooks: List[HookBase] = []
        self.epoch = 0
        self.iter = 0
        self.start_epoch = 0
        self.max_epochs = 0
        self.storage: Optional[EventStorage] = None

    def register_hooks(self, hooks: List[Optional[HookBase]]) -> None:
        """Append hooks (None entries are ignored); they run in registration order."""
        for h in hooks:
            if h is None:
                continue
            assert isinstance(h, HookBase), f"{h!r} is not a HookBase"
            # weak reference: the trainer owns the hooks, not the other way round
            h.trainer = weakref.proxy(self)
            self._hooks.append(h)

    @property
    def hooks(self) -> List[HookBase]:
        """Returns: the registered hooks, in order."""
        return list(self._hooks)

    @property
    def iters_per_epoch(self) -> int:
        """Returns: number of iterations in one epoch (``len(self.data_loader)``)."""
        return len(self.data_loader)

    def train(self, start_epoch: int, max_epochs: int) -> None:
        """Train from ``start_epoch`` (0-based) up to ``max_epochs`` (exclusive).

        Args:
            start_epoch: first epoch to run (non-zero when resuming).
            max_epochs: total number of epochs.
        """
        logger = logging.getLogger(__name__)
        self.start_epoch, self.max_epochs = start_epoch, max_epochs
        self.epoch = start_epoch
        if self.iter == 0 and start_epoch > 0:
            # no restored counter (a resumed run restores the exact one): epochs may differ in
            # length (PK sampling), so this is only an estimate used for logging
            self.data_loader.set_epoch(start_epoch)
            self.iter = start_epoch * self.iters_per_epoch
        with EventStorage(self.iter) as self.storage:
            try:
                self.before_train()  # training phases of hooks run here, before the main loop
                what = self.phase or "main loop"
                if start_epoch >= max_epochs:
                    logger.info(f"The {what} is already complete ({start_epoch} of {max_epochs} epochs done).")
                else:
                    logger.info(f"Starting the {what} at epoch {start_epoch + 1} of {max_epochs}")
                for self.epoch in range(start_epoch, max_epochs):
                    self.storage.epoch = self.epoch
                    self.before_epoch()
                    self.run_epoch()
                    self.after_epoch()
                # the final epoch is done: point past it, as a resumed run would see it
                self.epoch = max_epochs
            except ToolkitError:
                raise  # a message for the user (the tool prints it as one line), not a bug
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    def run_epoch(self) -> None:
        """Run every iteration of the current epoch."""
        self.data_loader.set_epoch(self.epoch)
        self.storage.epoch_start_iter = self.iter
        self.storage.iters_this_epoch = len(self.data_loader)
        data_start = time.perf_counter()
        for batch in self.data_loader:
            self._data_time = time.perf_counter() - data_start
            self.before_step()
            self.run_step(batch)
            self.after_step()
            self.iter += 1
            self.storage.step()
            data_start = time.perf_counter()

    def before_train(self):
        for h in self._hooks:
            h.before_train()

    def after_train(self):
        for h in self._hooks:
            h.after_train()

    def before_epoch(self):
        for h in self._hooks:
            h.before_epoch()

    def after_epoch(self):
        for h in self._hooks:
            h.after_epoch()

    def before_step(self):
        for h in self._hooks:
            h.before_step()

    def after_step(self):
        for h in self._hooks:
            h.after_step()

    def run_step(self, batch):
        """One optimisation step on ``batch``."""
        raise NotImplementedError

    def state_dict(self) -> Dict:
        """Returns: trainer progress and hook states, for checkpoints."""
        hooks = {}
        for h in self._hooks:
            sd = h.state_dict()
            if sd:
                hooks[type(h).__qualname__] = sd
        return {"epoch": self.epoch, "iteration": self.iter, "hooks": hooks}

    def load_state_dict(self, state: Dict) -> None:
        """Restore what :meth:`state_dict` returned (hook states matched by class name)."""
        logger = logging.getLogger(__name__)
        self.epoch = state["epoch"]
        self.iter = state["iteration"]
        for key, value in state.get("hooks", {}).items():
            for h in self._hooks:
                if type(h).__qualname__ == key:
                    h.load_state_dict(value)
                    break
            else:
                logger.warning(f"Checkpoint has state for hook {key!r}, which is not registered.")


def grads_params(optimizer) -> List[torch.Tensor]:
    """Returns: the optimizer's parameters that have a gradient."""
    return [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]


class OptimizationStep:
    """One optimisation step: forward under autocast, (scaled) backward, (unscale and) clip, step.

    The one implementation of a step, shared by the main loop (:class:`SimpleTrainer`) and by
    training phases with an optimizer of their own (CLIP-ReID's prompt learning).

    Args:
        optimizer: the optimizer.
        clip_grad_norm: max global gradient norm (0 = no clipping).
        amp_dtype: ``torch.float16`` (with a GradScaler), ``torch.bfloat16`` (no scaler needed)
            or None for fp32.
        device_type: "cuda" or "cpu" (autocast and GradScaler device).
    """

    def __init__(self, optimizer, clip_grad_norm: float = 0.0, amp_dtype: Optional[torch.dtype] = None,
                 device_type: str = "cpu"):
        self.optimizer = optimizer
        self.clip_grad_norm = float(clip_grad_norm)
        self.amp_dtype = amp_dtype
        self.device_type = device_type
        self.grad_scaler = torch.amp.GradScaler(device_type) if amp_dtype == torch.float16 else None

    def _grad_norm(self) -> Optional[torch.Tensor]:
        """Global gradient norm (a device tensor; no host sync), clipping it when configured."""
        params = grads_params(self.optimizer)
        if not params:
            return None
        if self.clip_grad_norm > 0:
            return torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        grads = [p.grad for p in params]
        if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: one fused pass
            return torch.nn.utils.get_total_norm(grads)
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))

    def __call__(self, compute_losses: Callable[[], Dict[str, torch.Tensor]]
                 ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        """Run one step.

        Args:
            compute_losses: returns the dict of named, already weighted losses (a bare tensor
                counts as ``{"total_loss": t}``); entries whose name starts with "loss" are
                summed and optimised, the others are only logged.

        Returns:
            (the loss dict, detached; the global gradient norm as a device tensor, or None with
            a GradScaler, whose skipped inf/NaN steps are expected).
        """
        with autocast(self.device_type, self.amp_dtype):
            loss_dict = compute_losses()
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(v for k, v in loss_dict.items() if k.startswith("loss"))
        self.optimizer.zero_grad(set_to_none=True)
        grad_norm = None
        if self.grad_scaler is None:
            losses.backward()
            grad_norm = self._grad_norm()
            self.optimizer.step()
        else:
            self.grad_scaler.scale(losses).backward()
            if self.clip_grad_norm > 0:
                self.grad_scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(grads_params(self.optimizer), self.clip_grad_norm)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        return {k: v.detach() for k, v in loss_dict.items()}, grad_norm

    def state_dict(self) -> Dict:
        """Returns: the GradScaler state (empty without one)."""
        return {"grad_scaler": self.grad_scaler.state_dict()} if self.grad_scaler is not None else {}

    def load_state_dict(self, state: Dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])


class LossMonitor:
    """Step losses accumulated on the device, reduced over processes every ``period`` steps.

    Reading a loss on the host (``.item()``) waits for the GPU; doing it every step, with a
    pickled all-gather, stalls training. The monitor keeps running sums and the first
    iteration whose loss or gradient norm was not finite in device tensors, and synchronises
    only in :meth:`flush` (every ``SOLVER.LOG_PERIOD_ITERS`` steps and at the end of an epoch).
    The non-finite stop still names the exact iteration it happened at; training after that
    step never reaches a checkpoint, because :meth:`flush` runs before the epoch's checkpoint.

    Divergence is judged against the run's **early baseline**: the smallest total loss of its
    first :attr:`BASELINE_STEPS` steps (the first is taken before any update, so a learning rate
    that explodes the loss within the first logging period is still caught), at least
    :attr:`BASELINE_FLOOR` (a loss that starts near 0 does not make every later value an
    "explosion"). A logging period whose mean total loss exceeds the baseline ``warn_factor``
    times is warned (again at every further factor of 10); past ``stop_factor`` times training
    stops with :class:`TrainingDivergedError` before the epoch's checkpoint, so the last
    checkpoint stays the last good state. The baseline is part of :meth:`state_dict` (saved
    in checkpoints): a resumed run judges against the same one.

    Args:
        phase: the loop's phase name, for messages ("" for the main loop).
        warn_factor: warn above this multiple of the baseline.
        stop_factor: stop above this multiple of the baseline.
    """

    BASELINE_STEPS = 5
    BASELINE_FLOOR = 1.0

    def __init__(self, phase: str = "", warn_factor: float = 100.0, stop_factor: float = 1e4):
        self.phase = phase
        self.warn_factor = float(warn_factor)
        self.stop_factor = float(stop_factor)
        self._baseline: Optional[float] = None  # min total loss of the steps seen so far (<= BASELINE_STEPS)
        self._baseline_steps = 0
        self._early: List[torch.Tensor] = []  # total losses of early steps not yet flushed
        self._warned_at = self.warn_factor
        self._reset()

    def _reset(self) -> None:
        self._sums: Dict[str, torch.Tensor] = {}
        self._count = 0
        self._first_bad: Optional[torch.Tensor] = None

    def update(self, loss_dict: Dict[str, torch.Tensor], grad_norm: Optional[torch.Tensor], iteration: int) -> None:
        """Add one step (device operations only, no host sync)."""
        total = sum(v.float() for k, v in loss_dict.items() if k.startswith("loss"))
        finite = torch.isfinite(total) if isinstance(total, torch.Tensor) else torch.tensor(True)
        if grad_norm is not None:
            finite = finite & torch.isfinite(grad_norm.to(finite.device))
        for k, v in loss_dict.items():
            v = v.detach().float()
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
        if isinstance(total, torch.Tensor) and self._baseline_steps + len(self._early) < self.BASELINE_STEPS:
            self._early.append(total.detach())
        # Python scalars, not new device tensors: creating a CUDA tensor from a number is a
        # blocking host-to-device copy, which would wait for the step's kernels.
        bad = torch.where(finite, -1, iteration)
        self._first_bad = bad if self._first_bad is None else torch.where(self._first_bad >= 0, self._first_bad, bad)
        self._count += 1

    @property
    def pending(self) -> int:
        """Steps added since the last flush."""
        return self._count

    def flush(self, iteration: int) -> Dict[str, float]:
        """Synchronise: the mean of every loss over the steps since the last flush, over all ranks.

        Args:
            iteration: the current iteration (for messages).

        Returns:
            ``{name: mean}`` plus ``total_loss`` (empty when no step was added).

        Raises:
            TrainingDivergedError: a loss or the gradient norm was NaN/inf at some step (the
                message names the first such iteration), or the mean total loss exceeds the
                early baseline ``stop_factor`` times.
        """
        if not self._count:
            return {}
        local = {k: v.item() for k, v in self._sums.items()}
        local["__count"] = float(self._count)
        local["__first_bad"] = float(self._first_bad.item())
        local["__early"] = [float(t.item()) for t in self._early]
        self._early = []
        self._reset()
        gathered = comm.all_gather(local)  # every rank sees the same values: all stop together
        bad = [int(d["__first_bad"]) for d in gathered if d["__first_bad"] >= 0]
        count = sum(d["__count"] for d in gathered)
        mean = {k: sum(d[k] for d in gathered) / count for k in local if not k.startswith("__")}
        if bad:
            raise TrainingDivergedError(
                f"The loss or the gradient norm became infinite or NaN at iteration {min(bad)}{self._of_phase()} "
                f"(mean losses of the steps since the last log: " + ", ".join(f"{k}={v:.4g}" for k, v in mean.items())
                + "). Training stopped before saving anything from it. Lower the learning rate, enable "
                  "SOLVER.CLIP_GRAD_NORM, or check the data.")
        mean["total_loss"] = sum(v for k, v in mean.items() if k.startswith("loss"))
        early = [v for d in gathered for v in d["__early"]]
        if early:
            low = min(early)
            self._baseline = low if self._baseline is None else min(self._baseline, low)
            self._baseline_steps += len(gathered[0]["__early"])
        self._check_explosion(mean["total_loss"], iteration)
        return mean

    def _of_phase(self) -> str:
        return f" of {self.phase}" if self.phase else ""

    def _check_explosion(self, total: float, iteration: int) -> None:
        if self._baseline is None:
            return
        reference = max(self._baseline, self.BASELINE_FLOOR)
        ratio = total / reference
        if ratio > self.stop_factor:
            raise TrainingDivergedError(
                f"The loss{self._of_phase()} rose from {self._baseline:.4g} (its smallest value in the first "
                f"steps) to {total:.4g} (x{ratio:.3g}, more than the x{self.stop_factor:g} at which training stops) "
                f"by iteration {iteration}: training diverged. Training stopped before saving anything from it. "
                f"Lower the learning rate or enable SOLVER.CLIP_GRAD_NORM.")
        if ratio > self._warned_at:
            logging.getLogger(__name__).warning(
                f"The loss{self._of_phase()} rose from {self._baseline:.4g} (its smallest value in the first steps) "
                f"to {total:.4g} (x{ratio:.3g}) by iteration {iteration}: training is probably diverging; it stops "
                f"past x{self.stop_factor:g}. Lower the learning rate or enable SOLVER.CLIP_GRAD_NORM.")
            while ratio > self._warned_at:
                self._warned_at *= 10

    def state_dict(self) -> Dict:
        """Returns: the early baseline and warning level (host floats; called at checkpoints,
        which follow a flush, so no step is pending)."""
        return {"baseline": self._baseline, "baseline_steps": self._baseline_steps, "warned_at": self._warned_at}

    def load_state_dict(self, state: Dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        if state:
            self._baseline = state["baseline"]
            self._baseline_steps = int(state["baseline_steps"])
            self._warned_at = float(state["warned_at"])


class SimpleTrainer(TrainerBase):
    """Trains ``model`` on ``data_loader`` with :class:`OptimizationStep` (fp32 or mixed precision).

    Losses are accumulated on the device (:class:`LossMonitor`) and reduced, checked and logged
    every ``log_period`` steps and at the end of each epoch: no host synchronisation per step.

    Args:
        model: returns a dict of losses in training mode.
        data_loader: iterable over one epoch of batches, with ``set_epoch`` and ``__len__``.
        optimizer: the optimizer.
        clip_grad_norm: max global gradient norm (0 = no clipping).
        amp_dtype: autocast dtype (``torch.float16`` with a GradScaler, ``torch.bfloat16``) or
            None for fp32.
        phase: name written with this loop's metrics and messages ("" for the main loop).
        log_period: steps between reductions of the losses (``SOLVER.LOG_PERIOD_ITERS``).
    """

    def __init__(self, model, data_loader, optimizer, clip_grad_norm: float = 0.0,
                 amp_dtype: Optional[torch.dtype] = None, phase: str = "", log_period: int = 20):
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.phase = phase
        self.log_period = max(int(log_period), 1)
        device_type = next(model.parameters()).device.type
        self.optimization_step = OptimizationStep(optimizer, clip_grad_norm, amp_dtype, device_type)
        self.monitor = LossMonitor(phase)

    def run_step(self, batch):
        """Forward, backward and update on one batch; reduce and log the losses at period ends."""
        loss_dict, grad_norm = self.optimization_step(lambda: self.model(batch))
        self.monitor.update(loss_dict, grad_norm, self.iter)
        storage = get_event_storage()
        if comm.is_main_process():
            storage.put_scalar("data_time", self._data_time)
        in_epoch = self.iter - storage.epoch_start_iter + 1
        if in_epoch % self.log_period == 0 or in_epoch >= storage.iters_this_epoch:
            mean = self.monitor.flush(self.iter)
            if comm.is_main_process():
                # already the mean over the logging window: written as it is, never smoothed again
                storage.put_scalars(**mean, smoothing_hint=False)

    def check_weights_finite(self) -> None:
        """Raise TrainingDivergedError when a parameter holds NaN/inf (one host sync)."""
        check_weights_finite(self.model, self.iter, self.phase)

    def step_state(self) -> Dict:
        """Returns: what continuing this loop's steps needs besides the model, optimizer and
        scheduler: the grad scaler and the loss monitor's early baseline."""
        return {**self.optimization_step.state_dict(), "loss_monitor": self.monitor.state_dict()}

    def load_step_state(self, state: Dict) -> None:
        """Restore :meth:`step_state`'s output (keys it lacks keep their fresh values)."""
        self.optimization_step.load_state_dict(state)
        self.monitor.load_state_dict(state.get("loss_monitor", {}))

    def state_dict(self):
        sd = super().state_dict()
        sd.update(self.step_state())
        return sd

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.load_step_state(state)


def check_weights_finite(model: torch.nn.Module, iteration: int, phase: str = "") -> None:
    """Raise TrainingDivergedError naming the first parameter with a NaN/inf value.

    Args:
        model: the model.
        iteration: for the message.
        phase: for the message.
    """
    params = [(n, p) for n, p in model.named_parameters()]
    if not params:
        return
    flags = torch.stack([torch.isfinite(p.detach()).all() for _, p in params])
    if bool(flags.all()):
        return
    bad = [n for (n, _), ok in zip(params, flags.tolist()) if not ok]
    raise TrainingDivergedError(
        f"Weights became infinite or NaN by iteration {iteration}{' of ' + phase if phase else ''} "
        f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}). No checkpoint was written from them. Lower the "
        f"learning rate or enable SOLVER.CLIP_GRAD_NORM.")
