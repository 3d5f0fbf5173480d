"""What a hook may rely on in the trainer it is registered with (``hook.trainer``).

:class:`TrainerProtocol` is the contract between :class:`~clipreid_plugin.engine.DefaultTrainer`
and hooks, phase hooks included (CLIP-ReID's stage 1 is one): a hook written against it works
under any trainer that offers these members, and a type checker tells its author what exists.
Members not listed here are the trainer's private business.
"""

from typing import Any, List, Optional, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["TrainerProtocol"]


@runtime_checkable
class TrainerProtocol(Protocol):
    """The trainer as hooks see it.

    Attributes:
        cfg: the run's frozen config (data-dependent keys filled).
        model: the model being trained (possibly wrapped by DDP / ``torch.compile``: use
            :func:`clipreid_plugin.utils.unwrap_model` to reach its own methods).
        data_loader: the main loop's train loader: ``len`` (iterations per epoch),
            ``set_epoch``, and ``dataset`` (the training samples ``(path, pid, camid, viewid)``).
        optimizer: the main loop's optimizer.
        checkpointer: saves and restores the run (``save(name)`` writes ``<name>.pth``
            atomically, with every registered hook's ``state_dict``).
        amp_dtype: the autocast dtype of training (``torch.float16`` / ``torch.bfloat16``), or
            None for fp32.
        epoch / iter: the current position (0-based epoch, global iteration).
        start_epoch / max_epochs: the epochs this run trains, ``range(start_epoch, max_epochs)``.
    """

    cfg: Any
    model: nn.Module
    data_loader: Any
    optimizer: torch.optim.Optimizer
    checkpointer: Any
    amp_dtype: Optional[torch.dtype]
    epoch: int
    iter: int
    start_epoch: int
    max_epochs: int

    def build_writers(self, max_iter: Optional[int] = None, iters_per_epoch: Optional[int] = None,
                      phase: str = "") -> List[Any]:
        """Returns: the event writers of a (phase's) training loop: console progress with ETA,
        ``metrics.json`` lines marked with ``phase``, TensorBoard when configured."""
