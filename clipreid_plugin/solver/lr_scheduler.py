"""Learning-rate schedules: warmup + multi-step decay, warmup + cosine, per epoch or per iteration.

Each schedule exists once, as a pure function of the schedule *position* (an epoch or an
iteration index): :func:`warmup_multistep_lr` and :func:`warmup_cosine_lr`. The
:class:`~torch.optim.lr_scheduler.LRScheduler` subclasses below only apply those functions to
every param group's base LR, so the trainer's schedule, CLIP-ReID stage 1's schedule and the
tests all use the same arithmetic.

Positions follow the reference implementation (CLIP-ReID / TransReID), which calls
``scheduler.step(epoch)`` with the 1-based epoch number *before* each epoch: constructing a
scheduler applies position 0, and the trainer calls :meth:`~torch.optim.lr_scheduler.LRScheduler.step`
at the start of every epoch, so the first epoch trains at position 1. With ``unit == "iter"``
the trainer steps after every iteration instead and every length (warmup, milestones, cosine
period) is measured in iterations.

Both schedules are defined for every position >= 0, including positions past the end of
training (a resumed or extended run never crashes; the cosine schedule stays at its floor).

fast-reid's two schedules are here too, registered under fast-reid's names ``MultiStepLR`` and
``CosineAnnealingLR`` (:func:`fastreid_epoch_steps`, :func:`fastreid_multistep_lr`,
:func:`fastreid_cosine_lr`): a per-iteration warmup, then torch's epoch schedule stepped at the
end of each epoch once warmup is over and ``DELAY_EPOCHS`` have passed. They are pure functions
of the iteration index too (the trainer steps them after every iteration).
"""

import bisect
import math
import warnings
from typing import Dict, List, Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from clipreid_plugin.config.configurable import configurable
from clipreid_plugin.utils.registry import Registry
from clipreid_plugin.utils.errors import ConfigError

__all__ = [
    "LR_SCHEDULER_REGISTRY",
    "warmup_multiplier",
    "warmup_multistep_lr",
    "warmup_cosine_lr",
    "WarmupMultiStepLR",
    "WarmupCosineLR",
    "fastreid_epoch_steps",
    "fastreid_cosine_t_max",
    "fastreid_multistep_lr",
    "fastreid_cosine_lr",
    "MultiStepLR",
    "CosineAnnealingLR",
    "build_lr_scheduler",
]

LR_SCHEDULER_REGISTRY = Registry("LR_SCHEDULER", training_keys=["SOLVER.SCHED.NAME"])
LR_SCHEDULER_REGISTRY.__doc__ = """
Registry for LR schedules (``SOLVER.SCHED.NAME``). A registered class is built as
``cls(cfg, optimizer=..., iters_per_epoch=...)`` (the configurable convention).
"""

WARMUP_METHODS = ("linear", "constant")
UNITS = ("epoch", "iter")


def check_warmup_method(method: str) -> None:
    """Raises ConfigError naming ``SOLVER.WARMUP_METHOD`` unless ``method`` is one of :data:`WARMUP_METHODS`."""
    if method not in WARMUP_METHODS:
        raise ConfigError(f"Unknown warmup method {method!r}; valid: {', '.join(WARMUP_METHODS)} (SOLVER.WARMUP_METHOD).")


def warmup_multiplier(position: float, warmup_length: float, warmup_factor: float, method: str) -> float:
    """Multiplier of the base LR during warmup (1 once warmup is over).

    ``linear``: ``wf * (1 - t / W) + t / W`` for ``t < W`` (rises from ``wf`` at t = 0 towards 1);
    ``constant``: ``wf`` for ``t < W``. Computed in the reference's operation order so the
    result matches it bit for bit.

    Args:
        position: schedule position t (epoch or iteration).
        warmup_length: W, in the same unit; 0 disables warmup.
        warmup_factor: wf, the multiplier at t = 0.
        method: "linear" or "constant".

    Returns:
        The multiplier.
    """
    if position >= warmup_length:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = position / warmup_length
        return warmup_factor * (1 - alpha) + alpha
    check_warmup_method(method)  # raises: an unknown method


def warmup_multistep_lr(position: float, base_lr: float, milestones: Sequence[float], gamma: float = 0.1,
                        warmup_length: float = 0, warmup_factor: float = 1.0,
                        warmup_method: str = "linear") -> float:
    """Warmup then step decay: ``base * w(t) * gamma ** (number of milestones <= t)``.

    The reference's ``WarmupMultiStepLR`` (CLIP-ReID stage 2 and the baselines).

    Args:
        position: schedule position t (epoch or iteration), any value >= 0.
        base_lr: LR after warmup and before the first milestone.
        milestones: increasing positions at which the LR is multiplied by ``gamma``.
        gamma: decay factor per milestone.
        warmup_length, warmup_factor, warmup_method: see :func:`warmup_multiplier`.

    Returns:
        The learning rate at ``position``.
    """
    w = warmup_multiplier(position, warmup_length, warmup_factor, warmup_method)
    return base_lr * w * gamma ** bisect.bisect_right(list(milestones), position)


def warmup_cosine_lr(position: float, base_lr: float, total_length: float, lr_min: float = 0.0,
                     warmup_length: float = 0, warmup_factor: float = 1.0,
                     warmup_method: str = "linear") -> float:
    """Warmup then half-cosine decay to ``lr_min``, in the form of timm's ``CosineLRScheduler``.

    This is the reference's stage-1 schedule (one cycle, ``warmup_prefix=False``):

    * ``t < W``: ``base * w(t)`` (:func:`warmup_multiplier`; timm's ``warmup_lr_init`` equals
      ``base * warmup_factor``);
    * ``W <= t < T``: ``lr_min + 0.5 * (base - lr_min) * (1 + cos(pi * t / T))`` -- the cosine
      is *not* shifted by the warmup, so it starts part-way down;
    * ``t >= T``: ``lr_min`` (the cycle is exhausted; also any position past the end).

    Args:
        position: schedule position t (epoch or iteration), any value >= 0.
        base_lr: peak LR.
        total_length: T, the cosine period (the number of epochs or iterations of training).
        lr_min: floor of the cosine, an absolute LR (the same for every param group, as timm).
        warmup_length, warmup_factor, warmup_method: see :func:`warmup_multiplier`.

    Returns:
        The learning rate at ``position``.
    """
    if position < warmup_length:
        return base_lr * warmup_multiplier(position, warmup_length, warmup_factor, warmup_method)
    if position >= total_length:
        return lr_min
    return lr_min + 0.5 * (base_lr - lr_min) * (1 + math.cos(math.pi * position / total_length))


class _PositionScheduler(LRScheduler):
    """An LRScheduler whose LR is a closed-form function of the position ``last_epoch``.

    Subclasses implement :meth:`_lr` (base LR, position -> LR). Every attribute is plain data,
    so :meth:`state_dict` pickles with ``torch.load(weights_only=True)``.

    Args:
        optimizer: the optimizer; each param group's ``lr`` at construction is its base LR.
        unit: "epoch" or "iter" -- when the trainer calls :meth:`step` (informational here:
            the lengths given to the constructor must already be in this unit).
        last_epoch: -1 for a fresh schedule (see :class:`~torch.optim.lr_scheduler.LRScheduler`).
    """

    def __init__(self, optimizer: Optimizer, unit: str = "epoch", last_epoch: int = -1):
        if unit not in UNITS:
            raise ConfigError(f"Unknown schedule unit {unit!r}; valid: {', '.join(UNITS)} (SOLVER.SCHED.UNIT).")
        self.unit = unit
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr: float, position: int) -> float:
        raise NotImplementedError

    def lr_at(self, position: int) -> List[float]:
        """Returns: the LR of every param group at schedule ``position`` (no side effects)."""
        return [self._lr(base_lr, position) for base_lr in self.base_lrs]

    def get_lr(self) -> List[float]:
        """Returns: the LR of every param group at the current position ``last_epoch``."""
        return self.lr_at(self.last_epoch)

    def _get_closed_form_lr(self) -> List[float]:
        return self.lr_at(self.last_epoch)

    def step(self, epoch=None) -> None:
        """Advance one position and write the new LRs into the optimizer.

        With ``unit == "epoch"`` the trainer steps at the *start* of each epoch, before any
        ``optimizer.step()`` of that epoch, exactly as the reference does; torch's warning
        about that order is silenced here because the order is intended.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            super().step(epoch)


@LR_SCHEDULER_REGISTRY.register()
class WarmupMultiStepLR(_PositionScheduler):
    """Warmup + multi-step decay (:func:`warmup_multistep_lr`) applied to every param group.

    Args:
        optimizer: the optimizer (one base LR per param group, e.g. bias groups at 2x).
        milestones: increasing positions where the LR is multiplied by ``gamma``.
        gamma: decay per milestone.
        warmup_factor: multiplier at position 0.
        warmup_length: warmup length in positions (0 = none).
        warmup_method: "linear" or "constant".
        unit: "epoch" or "iter" (the unit of every length above).
        last_epoch: -1 for a fresh schedule.
    """

    @configurable
    def __init__(self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1,
                 warmup_factor: float = 0.01, warmup_length: int = 10, warmup_method: str = "linear",
                 unit: str = "epoch", last_epoch: int = -1):
        milestones = [int(m) for m in milestones]
        if milestones != sorted(milestones):
            raise ConfigError(f"Milestones must be increasing, got {milestones} (SOLVER.STEPS_EPOCHS).")
        check_warmup_method(warmup_method)
        self.milestones = milestones
        self.gamma = float(gamma)
        self.warmup_factor = float(warmup_factor)
        self.warmup_length = int(warmup_length)
        self.warmup_method = warmup_method
        super().__init__(optimizer, unit, last_epoch)

    def _lr(self, base_lr: float, position: int) -> float:
        return warmup_multistep_lr(position, base_lr, self.milestones, self.gamma,
                                   self.warmup_length, self.warmup_factor, self.warmup_method)

    @classmethod
    def from_config(cls, cfg, optimizer: Optimizer, iters_per_epoch: int) -> Dict:
        """Arguments from ``SOLVER.{STEPS_EPOCHS, GAMMA, WARMUP_*, SCHED.UNIT}`` (lengths scaled to iterations if needed)."""
        s = cfg.SOLVER
        _no_warmup_iters(cfg, "WarmupMultiStepLR")
        k = _positions_per_epoch(s.SCHED.UNIT, iters_per_epoch)
        return {"optimizer": optimizer, "milestones": [m * k for m in s.STEPS_EPOCHS], "gamma": s.GAMMA,
                "warmup_factor": s.WARMUP_FACTOR, "warmup_length": s.WARMUP_EPOCHS * k,
                "warmup_method": s.WARMUP_METHOD, "unit": s.SCHED.UNIT}


@LR_SCHEDULER_REGISTRY.register()
class WarmupCosineLR(_PositionScheduler):
    """Warmup + cosine decay to an absolute floor (:func:`warmup_cosine_lr`), every param group.

    Args:
        optimizer: the optimizer.
        total_length: cosine period T in positions (training length); ``lr_min`` from T on.
        lr_min: floor LR (absolute, shared by all groups).
        warmup_factor: multiplier at position 0 (timm's ``warmup_lr_init / base_lr``).
        warmup_length: warmup length in positions (0 = none).
        warmup_method: "linear" or "constant".
        unit: "epoch" or "iter" (the unit of every length above).
        last_epoch: -1 for a fresh schedule.
    """

    @configurable
    def __init__(self, optimizer: Optimizer, total_length: int, lr_min: float = 0.0,
                 warmup_factor: float = 0.01, warmup_length: int = 0, warmup_method: str = "linear",
                 unit: str = "epoch", last_epoch: int = -1):
        if total_length <= 0:
            raise ConfigError(f"The cosine period must be positive, got {total_length} (SOLVER.MAX_EPOCHS).")
        check_warmup_method(warmup_method)
        self.total_length = int(total_length)
        self.lr_min = float(lr_min)
        self.warmup_factor = float(warmup_factor)
        self.warmup_length = int(warmup_length)
        self.warmup_method = warmup_method
        super().__init__(optimizer, unit, last_epoch)

    def _lr(self, base_lr: float, position: int) -> float:
        return warmup_cosine_lr(position, base_lr, self.total_length, self.lr_min,
                                self.warmup_length, self.warmup_factor, self.warmup_method)

    @classmethod
    def from_config(cls, cfg, optimizer: Optimizer, iters_per_epoch: int) -> Dict:
        """Arguments from ``SOLVER.{MAX_EPOCHS, ETA_MIN_LR, WARMUP_*, SCHED.UNIT}`` (lengths scaled to iterations if needed)."""
        s = cfg.SOLVER
        _no_warmup_iters(cfg, "WarmupCosineLR")
        k = _positions_per_epoch(s.SCHED.UNIT, iters_per_epoch)
        return {"optimizer": optimizer, "total_length": s.MAX_EPOCHS * k, "lr_min": s.ETA_MIN_LR,
                "warmup_factor": s.WARMUP_FACTOR, "warmup_length": s.WARMUP_EPOCHS * k,
                "warmup_method": s.WARMUP_METHOD, "unit": s.SCHED.UNIT}


def _no_warmup_iters(cfg, name: str) -> None:
    if int(cfg.SOLVER.WARMUP_ITERS) > 0 or int(cfg.SOLVER.DELAY_EPOCHS) > 0:
        raise ConfigError(
            f"SOLVER.WARMUP_ITERS / SOLVER.DELAY_EPOCHS belong to fast-reid's schedules (SOLVER.SCHED.NAME "
            f"MultiStepLR or CosineAnnealingLR); {name} warms up over SOLVER.WARMUP_EPOCHS: set them to 0.")


def fastreid_epoch_steps(iteration: int, iters_per_epoch: int, warmup_iters: int, delay_epochs: int) -> int:
    """How many times fast-reid has stepped its epoch schedule before ``iteration`` (0-based).

    fast-reid's ``LRScheduler`` hook steps the epoch schedule after epoch ``e`` (0-based) only
    when ``(e + 1) * ipe + 1 > WARMUP_ITERS`` and ``e + 1 > DELAY_EPOCHS``; iteration ``i`` has
    seen the ends of epochs ``1 .. i // ipe``. So ``STEPS [40, 90]`` with 2000 warmup iterations
    at 202 iterations per epoch decay from the 50th and 100th epochs (0-based 49 and 99).

    Args:
        iteration: global iteration index (0-based).
        iters_per_epoch: iterations per epoch.
        warmup_iters: WARMUP_ITERS.
        delay_epochs: DELAY_EPOCHS.

    Returns:
        The number of epoch-schedule steps (>= 0).
    """
    first = fastreid_first_stepping_epoch(math.ceil(warmup_iters / iters_per_epoch), delay_epochs)
    return max(0, iteration // iters_per_epoch - first + 1)


def fastreid_first_stepping_epoch(warmup_epochs: int, delay_epochs: int) -> int:
    """The first epoch end (1-based) after which fast-reid steps its epoch schedule: once the warmup
    (``warmup_epochs`` = ``ceil(WARMUP_ITERS / ipe)``) is over and past ``DELAY_EPOCHS``."""
    return max(warmup_epochs, delay_epochs + 1)


def fastreid_cosine_t_max(max_epochs: int, iters_per_epoch: int, warmup_iters: int, delay_epochs: int) -> int:
    """fast-reid's cosine period: ``MAX_EPOCH - max(ceil(WARMUP_ITERS / ipe), DELAY_EPOCHS)`` (may be <= 0)."""
    return max_epochs - max(math.ceil(warmup_iters / iters_per_epoch), delay_epochs)


def fastreid_multistep_lr(iteration: int, base_lr: float, iters_per_epoch: int, milestones: Sequence[int],
                          gamma: float = 0.1, warmup_iters: int = 0, warmup_factor: float = 0.1,
                          warmup_method: str = "linear", delay_epochs: int = 0) -> float:
    """fast-reid's ``WarmupLR`` + ``MultiStepLR`` at ``iteration``.

    ``base * w(i)`` during warmup (:func:`warmup_multiplier` with W = ``warmup_iters``), then
    ``base * gamma ** (milestones <= n)`` with n = :func:`fastreid_epoch_steps`.

    Returns:
        The learning rate.
    """
    w = warmup_multiplier(iteration, warmup_iters, warmup_factor, warmup_method)
    n = fastreid_epoch_steps(iteration, iters_per_epoch, warmup_iters, delay_epochs)
    return base_lr * w * gamma ** bisect.bisect_right(list(milestones), n)


def fastreid_cosine_lr(iteration: int, base_lr: float, iters_per_epoch: int, max_epochs: int,
                       eta_min: float = 0.0, warmup_iters: int = 0, warmup_factor: float = 0.1,
                       warmup_method: str = "linear", delay_epochs: int = 0) -> float:
    """fast-reid's ``WarmupLR`` + ``CosineAnnealingLR`` at ``iteration``.

    ``base * w(i)`` during warmup, then ``eta_min + (base - eta_min) * (1 + cos(pi * n / T)) / 2``
    with n = :func:`fastreid_epoch_steps` and T = :func:`fastreid_cosine_t_max`.

    Fix of the peer: with ``T <= 0`` (VeRi's 3000 warmup iterations at few iterations per epoch)
    torch's ``CosineAnnealingLR`` divides by zero (``T == 0``) or oscillates (``T < 0``) at the
    end of the last epoch. Here the cosine never starts during training in that case (n is 0
    until the last epoch's end, as in the peer), and any step at or past T is the floor
    ``eta_min``: every LR the peer trains with is unchanged, and no position crashes.

    Returns:
        The learning rate.
    """
    n = fastreid_epoch_steps(iteration, iters_per_epoch, warmup_iters, delay_epochs)
    if n == 0:
        return base_lr * warmup_multiplier(iteration, warmup_iters, warmup_factor, warmup_method)
    t_max = fastreid_cosine_t_max(max_epochs, iters_per_epoch, warmup_iters, delay_epochs)
    if n >= t_max:
        return eta_min
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * n / t_max)) / 2


def _fastreid_warmup_iters(s, iters_per_epoch: int) -> int:
    """WARMUP_ITERS, or WARMUP_EPOCHS in iterations when WARMUP_ITERS is 0 (one of them may be set)."""
    if int(s.WARMUP_ITERS) > 0 and int(s.WARMUP_EPOCHS) > 0:
        raise ConfigError(f"SOLVER.WARMUP_ITERS ({s.WARMUP_ITERS}) and SOLVER.WARMUP_EPOCHS ({s.WARMUP_EPOCHS}) both "
                          f"set the warmup: set one of them to 0.")
    return int(s.WARMUP_ITERS) if int(s.WARMUP_ITERS) > 0 else int(s.WARMUP_EPOCHS) * iters_per_epoch


class _FastReIDScheduler(_PositionScheduler):
    """A fast-reid schedule: position = global iteration, stepped after every iteration."""

    def __init__(self, optimizer: Optimizer, iters_per_epoch: int, warmup_iters: int, warmup_factor: float,
                 warmup_method: str, delay_epochs: int, last_epoch: int):
        if int(iters_per_epoch) < 1:
            raise ConfigError(f"fast-reid's schedules need at least one iteration per epoch, got {iters_per_epoch}: "
                              f"the train loader yields no full batch (fewer images than SOLVER.IMS_PER_BATCH?).")
        check_warmup_method(warmup_method)
        self.iters_per_epoch = int(iters_per_epoch)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.warmup_method = warmup_method
        self.delay_epochs = int(delay_epochs)
        super().__init__(optimizer, "iter", last_epoch)

    @classmethod
    def _common_args(cls, cfg, iters_per_epoch: int) -> dict:
        s = cfg.SOLVER
        return dict(iters_per_epoch=iters_per_epoch, warmup_iters=_fastreid_warmup_iters(s, int(iters_per_epoch)),
                    warmup_factor=s.WARMUP_FACTOR, warmup_method=s.WARMUP_METHOD, delay_epochs=s.DELAY_EPOCHS)


@LR_SCHEDULER_REGISTRY.register()
class MultiStepLR(_FastReIDScheduler):
    """fast-reid's ``MultiStepLR`` with its ``WarmupLR`` (:func:`fastreid_multistep_lr`), every param group.

    Args:
        optimizer: the optimizer (each group's ``lr`` at construction is its base LR).
        iters_per_epoch: iterations per epoch.
        milestones: counts of epoch-schedule steps (fast-reid's ``SOLVER.STEPS``; here
            ``SOLVER.STEPS_EPOCHS``), counted from the end of warmup / DELAY_EPOCHS.
        gamma: decay per milestone.
        warmup_iters: warmup length in iterations (0 = none).
        warmup_factor: LR multiplier at iteration 0.
        warmup_method: "linear" or "constant".
        delay_epochs: epochs before the epoch schedule starts counting.
        last_epoch: -1 for a fresh schedule (the position is the iteration).
    """

    @configurable
    def __init__(self, optimizer: Optimizer, *, iters_per_epoch: int, milestones: Sequence[int], gamma: float = 0.1,
                 warmup_iters: int = 0, warmup_factor: float = 0.1, warmup_method: str = "linear",
                 delay_epochs: int = 0, last_epoch: int = -1):
        milestones = [int(m) for m in milestones]
        if milestones != sorted(milestones):
            raise ConfigError(f"Milestones must be increasing, got {milestones} (SOLVER.STEPS_EPOCHS).")
        self.milestones = milestones
        self.gamma = float(gamma)
        super().__init__(optimizer, iters_per_epoch, warmup_iters, warmup_factor, warmup_method, delay_epochs,
                         last_epoch)

    @classmethod
    def from_config(cls, cfg, optimizer: Optimizer, iters_per_epoch: int) -> dict:
        """Arguments from ``SOLVER.{STEPS_EPOCHS, GAMMA, WARMUP_ITERS or WARMUP_EPOCHS, WARMUP_FACTOR, WARMUP_METHOD, DELAY_EPOCHS}``."""
        return dict(optimizer=optimizer, milestones=list(cfg.SOLVER.STEPS_EPOCHS), gamma=cfg.SOLVER.GAMMA,
                    **cls._common_args(cfg, iters_per_epoch))

    def _lr(self, base_lr: float, position: int) -> float:
        return fastreid_multistep_lr(position, base_lr, self.iters_per_epoch, self.milestones, self.gamma,
                                     self.warmup_iters, self.warmup_factor, self.warmup_method, self.delay_epochs)


@LR_SCHEDULER_REGISTRY.register()
class CosineAnnealingLR(_FastReIDScheduler):
    """fast-reid's ``CosineAnnealingLR`` with its ``WarmupLR`` (:func:`fastreid_cosine_lr`), every param group.

    Args:
        optimizer: the optimizer (each group's ``lr`` at construction is its base LR).
        iters_per_epoch: iterations per epoch.
        max_epochs: training length in epochs (the cosine period is :func:`fastreid_cosine_t_max`).
        eta_min: the floor (absolute LR).
        warmup_iters, warmup_factor, warmup_method, delay_epochs, last_epoch: see :class:`MultiStepLR`.
    """

    @configurable
    def __init__(self, optimizer: Optimizer, *, iters_per_epoch: int, max_epochs: int, eta_min: float = 0.0,
                 warmup_iters: int = 0, warmup_factor: float = 0.1, warmup_method: str = "linear",
                 delay_epochs: int = 0, last_epoch: int = -1):
        self.max_epochs = int(max_epochs)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, iters_per_epoch, warmup_iters, warmup_factor, warmup_method, delay_epochs,
                         last_epoch)

    @property
    def t_max(self) -> int:
        """Returns: the cosine period in epoch-schedule steps (fast-reid's ``T_max``; may be <= 0)."""
        return fastreid_cosine_t_max(self.max_epochs, self.iters_per_epoch, self.warmup_iters, self.delay_epochs)

    @classmethod
    def from_config(cls, cfg, optimizer: Optimizer, iters_per_epoch: int) -> dict:
        """Arguments from ``SOLVER.{MAX_EPOCHS, ETA_MIN_LR, WARMUP_ITERS or WARMUP_EPOCHS, WARMUP_FACTOR, WARMUP_METHOD, DELAY_EPOCHS}``."""
        return dict(optimizer=optimizer, max_epochs=cfg.SOLVER.MAX_EPOCHS, eta_min=cfg.SOLVER.ETA_MIN_LR,
                    **cls._common_args(cfg, iters_per_epoch))

    def _lr(self, base_lr: float, position: int) -> float:
        return fastreid_cosine_lr(position, base_lr, self.iters_per_epoch, self.max_epochs, self.eta_min,
                                  self.warmup_iters, self.warmup_factor, self.warmup_method, self.delay_epochs)


def _positions_per_epoch(unit: str, iters_per_epoch: int) -> int:
    if unit not in UNITS:
        raise ConfigError(f"SOLVER.SCHED.UNIT must be one of {', '.join(UNITS)}, got {unit!r}.")
    if unit == "epoch":
        return 1
    if int(iters_per_epoch) < 1:
        raise ConfigError(
            f"SOLVER.SCHED.UNIT is 'iter' but iters_per_epoch is {iters_per_epoch}: the train loader "
            f"yields no full batch (fewer images than SOLVER.IMS_PER_BATCH?)."
        )
    return int(iters_per_epoch)


def build_lr_scheduler(cfg, optimizer: Optimizer, iters_per_epoch: int) -> _PositionScheduler:
    """Build the schedule named by ``SOLVER.SCHED.NAME`` for ``optimizer``.

    The returned scheduler has ``unit`` ("epoch" or "iter", from ``SOLVER.SCHED.UNIT``):
    step it at the start of every epoch for "epoch", after every iteration for "iter".
    Construction already sets the LRs of position 0.

    Args:
        cfg: the config.
        optimizer: the optimizer, with each param group's base LR as its ``lr``.
        iters_per_epoch: iterations per epoch (only used when the unit is "iter").

    Returns:
        A :class:`~torch.optim.lr_scheduler.LRScheduler` (``state_dict``/``load_state_dict``
        work) with ``unit`` and ``lr_at(position)``.
    """
    return LR_SCHEDULER_REGISTRY.build(cfg.SOLVER.SCHED.NAME, cfg, key="SOLVER.SCHED.NAME", optimizer=optimizer,
                                       iters_per_epoch=iters_per_epoch)
