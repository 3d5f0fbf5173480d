"""Checks that a test's training run trained: its weights moved and its loss fell.

Every test that trains calls :func:`assert_trained` (or its two halves) on what the run left in
its folder, ``metrics.json`` and the ``model_*.pth`` checkpoints, never on trainer internals, so
the checks survive refactors of the engine and cost no extra training. They are what makes a
broken optimisation step, a frozen backbone or a loss weighted 0 fail the suite (the mutation
check, tests/seams/test_mutations.py, runs the training tests under each and expects failures
whose message starts with :data:`NOT_TRAINED`).

A run needs two epochs of the phase and two checkpoints of it (``SOLVER.MAX_EPOCHS 2`` with
``SOLVER.CHECKPOINT_PERIOD 1`` gives ``model_0001.pth`` and ``model_final.pth``). The loss
compared is the epoch mean (the first epoch's against the last's); the weights compared are
those of the first checkpoint and of the last, so the last epoch, at least, must have moved them.
"""

import json
import os
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

__all__ = ["NOT_TRAINED", "FALLING", "assert_trained", "assert_loss_fell", "assert_weights_moved", "loss_curve",
           "phase_checkpoints", "checkpoint_weights"]

#: the start of every failure message of these checks (the mutation check looks for it)
NOT_TRAINED = "TRAINING DID NOT HAPPEN"

#: the losses of which one must fall by default: the total, or the identity loss. In a run of two
#: epochs of one or two steps the ID loss moves by ~1e-3, while the batch-hard triplet term swings
#: by whole units with which identities share a batch, so either may hide the other's fall.
FALLING = ("total_loss", "loss_cls")

# BatchNorm statistics change in every training-mode forward, with or without an optimiser step:
# they say nothing about training, so they are never compared.
_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")

StateDict = Dict[str, torch.Tensor]


def loss_curve(run_dir: str, phase: str = "", loss: str = "total_loss") -> List[float]:
    """The epoch means of ``loss`` in ``run_dir/metrics.json`` for one phase, in epoch order.

    Epoch means, not single records: a record logged every few steps is the mean over different
    batches (different identities), whose spread in a tiny run exceeds what two steps learn.

    Args:
        run_dir: a run's OUTPUT_DIR.
        phase: "" for the main loop, else a phase's name (records with ``"phase": name``).
        loss: the logged key (``total_loss``, ``loss_cls``, ...).
    """
    per_epoch: Dict[int, List[float]] = {}
    with open(os.path.join(run_dir, "metrics.json")) as f:
        for line in f:
            record = json.loads(line)
            if record.get("phase", "") == phase and loss in record:
                per_epoch.setdefault(int(record["epoch"]), []).append(float(record[loss]))
    return [sum(values) / len(values) for _, values in sorted(per_epoch.items())]


def assert_loss_fell(run_dir: str, phase: str = "",
                     loss: Union[str, Sequence[str]] = FALLING) -> Dict[str, List[float]]:
    """Assert the first epoch's mean loss of ``phase`` is positive and the last epoch's is lower.

    Args:
        run_dir: the run's OUTPUT_DIR.
        phase: "" for the main loop, else the phase's name.
        loss: a logged key, or several: then one of them must fall (see :data:`FALLING`); the
            first one logged must start above 0.

    Returns:
        {key: curve of epoch means} of the keys logged, for further checks.
    """
    keys = [loss] if isinstance(loss, str) else list(loss)
    where = f"{phase or 'the main loop'} in {run_dir}/metrics.json"
    curves = {k: c for k in keys if (c := loss_curve(run_dir, phase, k))}
    assert curves, f"{NOT_TRAINED}? none of {keys} is logged for {where}"
    first_key, first = next(iter(curves.items()))
    assert len(first) >= 2, \
        f"{NOT_TRAINED}? {first_key} of {where} has {len(first)} epoch(s) logged; a training test needs two"
    assert first[0] > 0, f"{NOT_TRAINED}: {first_key} of {where} starts at {first[0]} (every loss weighted 0?): {first}"
    assert any(c[-1] < c[0] for c in curves.values()), \
        f"{NOT_TRAINED}: no loss of {where} fell (epoch means: {curves})"
    return curves


def checkpoint_weights(path: str) -> StateDict:
    """The model's state dict from a checkpoint of this project (``{"model": ...}``) or a plain one."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    return data["model"] if isinstance(data, dict) and "model" in data else data


def phase_checkpoints(run_dir: str, phase: str = "") -> List[str]:
    """Checkpoints of one phase in ``run_dir``, in training order: the periodic ones
    (``model_0001.pth``, ``model_stage1_0002.pth``), then the final one."""
    prefix = f"model_{phase}_" if phase else "model_"
    periodic = re.compile(re.escape(prefix) + r"(\d+)\.pth$")
    numbered = sorted((int(m.group(1)), name) for name in os.listdir(run_dir) if (m := periodic.match(name)))
    paths = [os.path.join(run_dir, name) for _, name in numbered]
    final = os.path.join(run_dir, f"{prefix}final.pth")
    return paths + [final] if os.path.isfile(final) else paths


def _changed(before: StateDict, after: StateDict, prefix: str) -> Tuple[int, int]:
    """(number of trainable-looking tensors under ``prefix``, number that changed)."""
    names = [n for n in before if (n == prefix or n.startswith(prefix + ".")) and not n.endswith(_STATISTICS)
             and before[n].is_floating_point()]
    moved = [n for n in names if not torch.equal(before[n], after[n])]
    return len(names), len(moved)


def assert_weights_moved(before: Union[str, StateDict], after: Union[str, StateDict],
                         modules: Iterable[str] = ("backbone",)) -> None:
    """Assert that, in each of ``modules`` (state-dict prefixes), some parameter changed.

    Args:
        before, after: state dicts or checkpoint paths.
        modules: prefixes such as ``"backbone"``, ``"heads"``, ``"text_head.prompt_learner"``; each
            must exist and have at least one tensor (BatchNorm statistics aside) that differs.
    """
    label = f"{before} -> {after}" if isinstance(before, str) else "the model"
    before = checkpoint_weights(before) if isinstance(before, str) else before
    after = checkpoint_weights(after) if isinstance(after, str) else after
    for prefix in modules:
        total, moved = _changed(before, after, prefix)
        tops = sorted({n.split(".")[0] for n in before})
        assert total, f"no tensor named {prefix}.* in {label} (its modules: {tops})"
        assert moved, f"{NOT_TRAINED}: none of the {total} tensors of {prefix} changed ({label})"


def assert_trained(run_dir: str, phase: str = "", loss: Union[str, Sequence[str]] = FALLING,
                   modules: Iterable[str] = ("backbone",), before: Optional[StateDict] = None) -> None:
    """Assert that a run's phase trained: its logged ``loss`` fell and ``modules`` moved.

    Args:
        run_dir: the run's OUTPUT_DIR.
        phase: "" for the main loop, else the phase's name.
        loss: the logged loss that must fall, or several of which one must (default
            :data:`FALLING`).
        modules: state-dict prefixes that must have moved between the phase's first and last
            checkpoints.
        before: the weights before training, when the test has them; then the last checkpoint
            alone is needed.
    """
    assert_loss_fell(run_dir, phase, loss)
    paths = phase_checkpoints(run_dir, phase)
    if before is None:
        assert len(paths) >= 2, (f"{run_dir} has {len(paths)} checkpoint(s) of {phase or 'the main loop'}; a "
                                 f"training test needs two (SOLVER.CHECKPOINT_PERIOD 1 and two epochs)")
        before = paths[0]
    else:
        assert paths, f"{run_dir} has no checkpoint of {phase or 'the main loop'}"
    assert_weights_moved(before, paths[-1], modules)
