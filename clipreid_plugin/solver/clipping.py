"""fast-reid's gradient clipping (``SOLVER.CLIP_GRADIENTS``), applied inside the optimizer step.

fast-reid wraps the optimizer class so that ``step`` first clips the gradients of each entry of
each param group's ``params``. Its optimizer sees one flat buffer per group (``ContiguousParams``),
so "norm" clipping rescales each *group* to at most ``CLIP_VALUE`` in ``NORM_TYPE`` norm, and
"value" clipping clamps every element to ``[-CLIP_VALUE, CLIP_VALUE]``. Here a step pre-hook
does the same per group, so it runs after a GradScaler's unscale and after the frozen groups'
gradients were taken away (:mod:`.freeze`), as in fast-reid. This toolkit's
``SOLVER.CLIP_GRAD_NORM`` (one global norm over all parameters, in the trainer) is the other
way to clip; a config may enable one of the two.
"""

import torch

from clipreid_plugin.utils.errors import ConfigError

__all__ = ["CLIP_TYPES", "add_gradient_clipping", "clip_group_gradients"]

CLIP_TYPES = ("norm", "value")


def clip_group_gradients(optimizer: torch.optim.Optimizer, clip_type: str, clip_value: float,
                         norm_type: float = 2.0) -> None:
    """Clip the gradients of every param group separately (fast-reid's per-buffer clipping).

    Args:
        optimizer: the optimizer whose groups' gradients are clipped in place.
        clip_type: "norm" (each group's gradients scaled to norm <= ``clip_value``) or "value".
        clip_value: the maximum norm, or the maximum absolute value.
        norm_type: the norm's order (for "norm").
    """
    for group in optimizer.param_groups:
        grads = [p for p in group["params"] if p.grad is not None]
        if not grads:
            continue
        if clip_type == "norm":
            torch.nn.utils.clip_grad_norm_(grads, clip_value, norm_type)
        else:
            torch.nn.utils.clip_grad_value_(grads, clip_value)


def add_gradient_clipping(cfg, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Register fast-reid's clipping on ``optimizer`` when ``SOLVER.CLIP_GRADIENTS.ENABLED``.

    Args:
        cfg: the config (``SOLVER.CLIP_GRADIENTS.{ENABLED, CLIP_TYPE, CLIP_VALUE, NORM_TYPE}``).
        optimizer: the optimizer.

    Returns:
        The same optimizer.
    """
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return optimizer
    if c.CLIP_TYPE not in CLIP_TYPES:
        raise ConfigError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be one of {', '.join(CLIP_TYPES)}, "
                          f"got {c.CLIP_TYPE!r}.")
    if float(c.CLIP_VALUE) <= 0:
        raise ConfigError(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be positive, got {c.CLIP_VALUE}.")
    if float(cfg.SOLVER.CLIP_GRAD_NORM) > 0:
        raise ConfigError("SOLVER.CLIP_GRADIENTS.ENABLED and SOLVER.CLIP_GRAD_NORM both clip the gradients: "
                          "set SOLVER.CLIP_GRAD_NORM 0 (fast-reid's per-group clipping) or disable CLIP_GRADIENTS.")
    clip_type, clip_value, norm_type = c.CLIP_TYPE, float(c.CLIP_VALUE), float(c.NORM_TYPE)
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: clip_group_gradients(opt, clip_type, clip_value, norm_type))
    return optimizer
