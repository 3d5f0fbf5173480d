"""One construction convention for every component: from a config, or from plain arguments.

Every registered component (backbone, head, loss, meta-architecture, dataset, sampler,
evaluator, hook, LR schedule, optimizer, train transform) is a class whose ``__init__`` takes
plain keyword arguments and is decorated with :func:`configurable`, plus a classmethod
``from_config(cls, cfg, **context)`` that reads the config and returns those arguments::

    @LOSS_REGISTRY.register()
    class TripletLoss(nn.Module):
        @configurable
        def __init__(self, *, margin: float = 0.3, scale: float = 1.0):
            ...

        @classmethod
        def from_config(cls, cfg):
            return {"margin": cfg.MODEL.LOSSES.TRI.MARGIN, "scale": cfg.MODEL.LOSSES.TRI.SCALE}

    TripletLoss(cfg)                   # what the builders do: from the config
    TripletLoss(margin=0.5)            # a test or a notebook: plain arguments

``context`` is what a kind's builder knows besides the config and passes by keyword (a head's
``in_dim``, a sampler's dataset, an LR schedule's optimizer); each registry's docstring lists it.
``from_config`` may return extra keys the caller also gave, and a caller may override any
argument ``from_config`` returned: ``Head(cfg, in_dim=512, num_classes=0)``.

A function can be configurable too (``@configurable(from_config=fn)``), which is how a builder
function stays a registered component.

The design follows detectron2's ``@configurable`` (read there, written anew): the first
positional argument being a config selects the config path.
"""

import functools
import inspect
from typing import Any, Callable, Dict, Optional

from fvcore.common.config import CfgNode as _FvCfgNode

__all__ = ["configurable", "is_config", "is_configurable"]


def is_config(obj: Any) -> bool:
    """Returns: whether ``obj`` is a config node (the marker of the config path)."""
    return isinstance(obj, _FvCfgNode)


def _call_from_config(from_config: Callable, cfg, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``from_config(cfg, **context)`` with only the context it accepts, merged with ``kwargs``.

    Keys of ``kwargs`` that ``from_config`` does not take are passed on unchanged (they are
    plain arguments overriding or completing what the config gives).
    """
    params = inspect.signature(from_config).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    context = {k: v for k, v in kwargs.items() if takes_any or k in params}
    built = from_config(cfg, **context)
    if not isinstance(built, dict):
        raise TypeError(f"{getattr(from_config, '__qualname__', from_config)} must return a dict of "
                        f"constructor arguments, got {type(built).__name__}.")
    rest = {k: v for k, v in kwargs.items() if k not in context}
    return {**built, **rest}


def configurable(init_or_func: Optional[Callable] = None, *, from_config: Optional[Callable] = None):
    """Make a class ``__init__`` (or a function) callable with a config as first argument.

    On a class's ``__init__`` (no arguments): ``Cls(cfg, **context)`` calls
    ``Cls.from_config(cfg, **context)`` and constructs with the returned arguments;
    ``Cls(**kwargs)`` constructs directly.

    On a function: ``@configurable(from_config=fn)``; ``func(cfg, **context)`` calls
    ``func(**fn(cfg, **context))``.

    Args:
        init_or_func: the ``__init__`` being decorated (when used without parentheses).
        from_config: for a function, the function mapping a config to its arguments.

    Returns:
        The wrapped ``__init__`` / function.
    """
    if init_or_func is not None:
        if init_or_func.__name__ != "__init__":
            raise TypeError("@configurable without arguments decorates a class's __init__; for a function "
                            "use @configurable(from_config=...).")
        init = init_or_func

        @functools.wraps(init)
        def wrapped_init(self, *args, **kwargs):
            if args and is_config(args[0]):
                if len(args) > 1:
                    raise TypeError(f"{type(self).__name__}(cfg, ...): pass the context by keyword, got "
                                    f"{len(args) - 1} more positional argument(s).")
                builder = getattr(type(self), "from_config", None)
                if builder is None:
                    raise TypeError(f"{type(self).__name__} is built from a config but defines no "
                                    f"from_config classmethod.")
                return init(self, **_call_from_config(builder, args[0], kwargs))
            return init(self, *args, **kwargs)

        wrapped_init.__configurable__ = True
        return wrapped_init

    if from_config is None:
        raise TypeError("@configurable(...) on a function needs from_config=.")

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            if args and is_config(args[0]):
                if len(args) > 1:
                    raise TypeError(f"{func.__name__}(cfg, ...): pass the context by keyword.")
                return func(**_call_from_config(from_config, args[0], kwargs))
            return func(*args, **kwargs)

        wrapped.from_config = from_config
        wrapped.__configurable__ = True
        return wrapped

    return decorate


def is_configurable(obj: Any) -> bool:
    """Returns: whether ``obj`` (a class or function) follows the convention."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    return bool(getattr(target, "__configurable__", False))
