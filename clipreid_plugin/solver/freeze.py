"""fast-reid's layer freeze on the optimizer side: groups marked "freeze" are not stepped at first.

fast-reid (``SOLVER.FREEZE_ITERS`` with ``MODEL.FREEZE_LAYERS``) wraps the optimizer's
``step`` so that, for its first ``FREEZE_ITERS`` calls, the param groups whose
``freeze_status`` is "freeze" are skipped: their gradients are taken away before the update
and given back after it, so the optimizer neither moves those parameters nor creates state for
them. Here the same happens in an optimizer step pre-hook and post-hook.

The peer keeps its counter in a closure, so a resumed run freezes again for another
``FREEZE_ITERS`` steps. Here the number of frozen steps left is a key of each frozen param
group (``freeze_steps_left``): the optimizer's ``state_dict`` carries it, and a resumed run
continues where it stopped.

The module side of fast-reid's freeze (the named children in eval mode for the first
``FREEZE_ITERS`` iterations) is the engine's ``LayerFreeze`` hook.
"""

from typing import List, Tuple

import torch

__all__ = ["FREEZE_KEY", "add_group_freeze", "freeze_steps_left"]

FREEZE_KEY = "freeze_steps_left"


def freeze_steps_left(optimizer: torch.optim.Optimizer) -> int:
    """Returns: how many more ``step()`` calls skip the frozen groups (0 = none frozen any more)."""
    return max((int(g.get(FREEZE_KEY, 0)) for g in optimizer.param_groups if g.get("freeze_status") == "freeze"),
               default=0)


def add_group_freeze(optimizer: torch.optim.Optimizer, freeze_iters: int) -> torch.optim.Optimizer:
    """Skip the groups with ``freeze_status == "freeze"`` for the next ``freeze_iters`` steps.

    Args:
        optimizer: an optimizer whose groups carry ``freeze_status`` (see ``build_param_groups``).
        freeze_iters: number of ``step()`` calls that leave those groups untouched.

    Returns:
        The same optimizer, with the hooks registered.
    """
    for group in optimizer.param_groups:
        if group.get("freeze_status") == "freeze":
            group[FREEZE_KEY] = int(freeze_iters)
    taken: List[Tuple[torch.Tensor, torch.Tensor]] = []

    def take_frozen_grads(opt, args, kwargs):
        for group in opt.param_groups:
            if group.get("freeze_status") != "freeze" or int(group.get(FREEZE_KEY, 0)) <= 0:
                continue
            group[FREEZE_KEY] = int(group[FREEZE_KEY]) - 1
            for p in group["params"]:
                if p.grad is not None:
                    taken.append((p, p.grad))
                    p.grad = None

    def give_back_grads(opt, args, kwargs):
        for p, g in taken:
            p.grad = g
        taken.clear()

    optimizer.register_step_pre_hook(take_frozen_grads)
    optimizer.register_step_post_hook(give_back_grads)
    return optimizer
