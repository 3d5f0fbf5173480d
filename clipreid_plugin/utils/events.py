"""Training events: a per-run scalar store (EventStorage) and the writers that print/save it.

Modelled on detectron2's ``utils/events.py``: code anywhere inside training calls
``get_event_storage().put_scalar(name, value)``; writers (console, JSON lines, TensorBoard)
read the smoothed values periodically.
"""

import datetime
import json
import logging
import os
import time
from collections import defaultdict, deque
from typing import Dict, Optional

import numpy as np
import torch

__all__ = ["EventStorage", "get_event_storage", "EventWriter", "CommonMetricPrinter", "JSONWriter",
           "TensorboardWriter"]

_CURRENT_STORAGE_STACK = []


def get_event_storage() -> "EventStorage":
    """Returns: the EventStorage of the running training loop.

    Raises:
        RuntimeError: called outside ``with EventStorage(...)``.
    """
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError("get_event_storage() must be called inside a 'with EventStorage(...)' block.")
    return _CURRENT_STORAGE_STACK[-1]


class _History:
    """Recent values of one scalar with the iteration they were logged at."""

    def __init__(self, max_length: int = 1000):
        self.values = deque(maxlen=max_length)
        self.total, self.count = 0.0, 0

    def update(self, value: float, it: int) -> None:
        self.values.append((value, it))
        self.total += value
        self.count += 1

    def latest(self) -> float:
        return self.values[-1][0]

    def median(self, window: int) -> float:
        return float(np.median([v for v, _ in list(self.values)[-window:]]))

    def avg(self, window: int) -> float:
        return float(np.mean([v for v, _ in list(self.values)[-window:]]))

    def global_avg(self) -> float:
        return self.total / max(self.count, 1)


class EventStorage:
    """Scalars logged during training, keyed by name, with the iteration they belong to.

    Args:
        start_iter: iteration number of the first step (non-zero when resuming).
    """

    def __init__(self, start_iter: int = 0):
        self._history: Dict[str, _History] = defaultdict(_History)
        self._smoothing_hints: Dict[str, bool] = {}
        self._latest: Dict[str, tuple] = {}
        self.iter = start_iter
        self.epoch = 0
        self.epoch_start_iter = start_iter  # global iteration of the current epoch's first step
        self.iters_this_epoch = 0  # length of the current epoch (PK epochs vary slightly)

    def put_scalar(self, name: str, value, smoothing_hint: bool = True) -> None:
        """Record ``value`` for ``name`` at the current iteration.

        Args:
            name: scalar name (``loss_cls``, ``lr``, ``Market1501/mAP``...).
            value: float or 0-dim tensor.
            smoothing_hint: whether writers should show a windowed median instead of the raw value.
        """
        value = float(value.detach().item() if isinstance(value, torch.Tensor) else value)
        self._history[name].update(value, self.iter)
        self._latest[name] = (value, self.iter)
        self._smoothing_hints.setdefault(name, smoothing_hint)

    def put_scalars(self, *, smoothing_hint: bool = True, **kwargs) -> None:
        """Record several scalars at once (see :meth:`put_scalar`)."""
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint)

    def history(self, name: str) -> _History:
        """Returns: the history of ``name`` (KeyError if never logged)."""
        if name not in self._history:
            raise KeyError(f"No scalar named {name!r} has been logged.")
        return self._history[name]

    def histories(self) -> Dict[str, _History]:
        """Returns: every history, by name."""
        return self._history

    def latest(self) -> Dict[str, tuple]:
        """Returns: ``{name: (latest value, iteration)}``."""
        return self._latest

    def latest_with_smoothing_hint(self, window: int = 20) -> Dict[str, tuple]:
        """Returns: ``{name: (value, iteration)}`` with smoothed scalars replaced by their median."""
        out = {}
        for k, (v, it) in self._latest.items():
            out[k] = (self._history[k].median(window) if self._smoothing_hints[k] else v, it)
        return out

    def step(self) -> None:
        """Advance to the next iteration (called by the trainer after each step)."""
        self.iter += 1

    def __enter__(self):
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        assert _CURRENT_STORAGE_STACK[-1] is self
        _CURRENT_STORAGE_STACK.pop()


class EventWriter:
    """Base class of writers; ``write()`` is called periodically, ``close()`` at the end."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CommonMetricPrinter(EventWriter):
    """Console line: epoch, iteration, ETA, losses (the mean over the logging window, which the
    line names), timing (medians of the last ``window`` steps), learning rate, memory.

    Args:
        max_iter: total iterations of the run (for the ETA).
        iters_per_epoch: iterations in one epoch.
        window: median window of the per-step timings.
        phase: name of a training phase printed first ("" for the main loop).
    """

    def __init__(self, max_iter: int, iters_per_epoch: int, window: int = 20, phase: str = ""):
        self.logger = logging.getLogger("clipreid_plugin.events")
        self._max_iter, self._ipe, self._window = max_iter, max(iters_per_epoch, 1), window
        self._phase = phase
        self._last_write: Optional[tuple] = None

    def _eta(self, storage: EventStorage) -> str:
        it = storage.iter
        try:
            sec = storage.history("time").median(1000) * (self._max_iter - it - 1)
            return str(datetime.timedelta(seconds=int(sec)))
        except KeyError:  # no timing yet: estimate from wall clock between writes
            now = time.perf_counter()
            eta = ""
            if self._last_write is not None and it > self._last_write[0]:
                per = (now - self._last_write[1]) / (it - self._last_write[0])
                eta = str(datetime.timedelta(seconds=int(per * (self._max_iter - it - 1))))
            self._last_write = (it, now)
            return eta

    @staticmethod
    def _losses(storage: EventStorage) -> str:
        """The latest losses and the steps they average: the training loop logs each loss once
        per logging window as the mean of that window's steps (``LossMonitor``); a window ends
        at every ``SOLVER.LOG_PERIOD_ITERS`` steps and at the end of an epoch."""
        latest = {k: storage.history(k).values[-1] for k in storage.histories()
                  if k.startswith("loss") or k == "total_loss"}
        if not latest:
            return ""
        name = "total_loss" if "total_loss" in latest else next(iter(latest))
        history = storage.history(name).values
        it = history[-1][1]
        previous = history[-2][1] if len(history) > 1 else -1
        first = max(previous + 1, storage.epoch_start_iter)  # windows never span epochs
        steps = f"iter {it - storage.epoch_start_iter + 1}" if first == it else \
            f"iters {first - storage.epoch_start_iter + 1}-{it - storage.epoch_start_iter + 1}"
        return "  ".join(f"{k}: {v:.4g}" for k, (v, _) in latest.items()) + f" (mean of {steps})"

    def write(self) -> None:
        storage = get_event_storage()
        it = storage.iter
        if it >= self._max_iter:
            return
        ipe = storage.iters_this_epoch or self._ipe
        losses = self._losses(storage)
        parts = [f"epoch: {storage.epoch + 1}", f"iter: {it - storage.epoch_start_iter + 1}/{ipe}"]
        eta = self._eta(storage)
        if eta:
            parts.insert(0, f"eta: {eta}")
        if self._phase:
            parts.insert(0, f"[{self._phase}]")
        parts.append(losses)
        for key, fmt in (("acc", "{:.3f}"), ("time", "{:.4f}s"), ("data_time", "{:.4f}s")):
            if key in storage.histories():
                parts.append(f"{key}: " + fmt.format(storage.history(key).median(self._window)))
        if "lr" in storage.histories():
            parts.append(f"lr: {storage.history('lr').latest():.3e}")
        if torch.cuda.is_available():
            parts.append(f"max_mem: {torch.cuda.max_memory_allocated() / 1024 ** 2:.0f}M")
        self.logger.info("  ".join(p for p in parts if p))


class JSONWriter(EventWriter):
    """Append one JSON object per write (the latest scalars of each new iteration) to a file.

    Args:
        json_file: path, e.g. ``OUTPUT_DIR/metrics.json`` (opened in append mode, so resumed
            runs continue the same file).
        window: smoothing window for scalars with a smoothing hint.
        phase: name of a training phase, written as ``"phase"`` in every record ("" for the
            main loop: no such field). A phase counts its own iterations and epochs.
    """

    def __init__(self, json_file: str, window: int = 20, phase: str = ""):
        self._path = json_file
        self._file = None  # opened at the first write: a run that stops before training leaves no file
        self._window = window
        self._phase = phase
        self._last_written = -1

    def write(self) -> None:
        storage = get_event_storage()
        by_iter = defaultdict(dict)
        for k, (v, it) in storage.latest_with_smoothing_hint(self._window).items():
            if it > self._last_written:
                by_iter[it][k] = v
        if by_iter and self._file is None:
            os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
            self._file = open(self._path, "a")
        for it in sorted(by_iter):
            record = {"iteration": it, "epoch": storage.epoch, **by_iter[it]}
            if self._phase:
                record["phase"] = self._phase
            self._file.write(json.dumps(record, sort_keys=True) + "\n")
        if not by_iter:
            return
        self._last_written = max(by_iter)
        self._file.flush()
        try:
            os.fsync(self._file.fileno())
        except OSError:
            pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class TensorboardWriter(EventWriter):
    """Write the latest scalars to TensorBoard (requires the ``tensorboard`` package).

    Args:
        log_dir: event folder.
        window: smoothing window.
        phase: name of a training phase, prefixed to every scalar's tag ("" for the main loop).
    """

    def __init__(self, log_dir: str, window: int = 20, phase: str = ""):
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - the [tensorboard] extra

        self._writer = SummaryWriter(log_dir)
        self._window = window
        self._prefix = f"{phase}/" if phase else ""
        self._last_written = -1

    def write(self) -> None:
        storage = get_event_storage()
        new_last = self._last_written
        for k, (v, it) in storage.latest_with_smoothing_hint(self._window).items():
            if it > self._last_written:
                self._writer.add_scalar(self._prefix + k, v, it)
                new_last = max(new_last, it)
        self._last_written = new_last

    def close(self) -> None:
        self._writer.close()
