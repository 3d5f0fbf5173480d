"""torchreid's "fixbase" epochs: train only the open layers first, then everything.

torchreid (``Engine.two_stepped_transfer_learning`` with ``open_specified_layers``) starts each
of the first ``fixbase_epoch`` epochs by putting every child module of the model except the
``open_layers`` in eval mode with ``requires_grad = False``: the frozen layers get no gradient,
so the optimizer (built over all parameters) skips them, and their BatchNorm statistics do not
move. Afterwards ``open_all_layers`` puts the model in train mode with every parameter trainable.

Here (:class:`FixBaseHook`, added by the trainer when ``SOLVER.FIXBASE_EPOCHS`` > 0):

* ``MODEL.OPEN_LAYERS`` names modules by their path in the model (``heads.classifier``) or by
  the path's last part (``classifier``: every module so named), since a meta-architecture nests
  torchreid's children (``backbone.conv1``, ``heads.fc``); a parameter's name works too
  (fast-reid's ``EmbeddingHead`` keeps its classifier as ``heads.weight``). The ancestors of an
  open module stay in train mode (the meta-architecture and the head must still compute their
  training outputs); everything else is frozen as torchreid freezes its children.
* After the fixbase epochs each parameter gets back the ``requires_grad`` it had before, instead
  of torchreid's "every parameter True": a parameter the model keeps frozen on purpose (the
  BNNeck's bias) stays frozen. For torchreid's own models the two are the same.
* The phase is a function of the epoch alone, so a resumed run freezes exactly when the
  uninterrupted one would have.
"""

import logging
from typing import Dict, List, Sequence

from torch import nn

from clipreid_plugin.config.configurable import configurable
from clipreid_plugin.utils.checkpoint import unwrap_model
from clipreid_plugin.utils.errors import ConfigError

from .hooks import HOOK_REGISTRY
from .train_loop import HookBase

__all__ = ["resolve_open_layers", "open_specified_layers", "restore_requires_grad", "FixBaseHook"]

logger = logging.getLogger(__name__)


def resolve_open_layers(model: nn.Module, names: Sequence[str]) -> List[str]:
    """The module (or parameter) paths ``names`` designate in ``model``.

    Args:
        model: the model.
        names: module paths, or last parts of paths (every module whose path ends with it); a
            parameter's name works too (fast-reid's ``EmbeddingHead`` holds its classifier as the
            parameter ``heads.weight``).

    Returns:
        The matching paths, in the model's order (modules, then parameters).

    Raises:
        ConfigError: a name matches nothing (the message lists the model's top-level modules).
    """
    paths = [p for p, _ in model.named_modules() if p] + [n for n, _ in model.named_parameters()]
    found: List[str] = []
    for name in names:
        hits = [p for p in paths if p == name or p.endswith("." + name)]
        if not hits:
            tops = sorted({p.split(".")[0] for p in paths})
            raise ConfigError(f"MODEL.OPEN_LAYERS: no module of the model is named {name!r}; give a module path "
                              f"(e.g. 'heads.classifier'), its last part, or a parameter's name. Top-level "
                              f"modules: {', '.join(tops)}.")
        found.extend(h for h in hits if h not in found)
    return [p for p in paths if p in found]


def open_specified_layers(model: nn.Module, open_paths: Sequence[str]) -> Dict[str, bool]:
    """Freeze everything of ``model`` except ``open_paths``: modules, their sub-modules, or parameters.

    Frozen modules are put in eval mode and their parameters get ``requires_grad = False``; open
    modules are put in train mode with the ``requires_grad`` they were built with. Ancestors of
    open paths stay in train mode; their other children and their own parameters are frozen.

    Args:
        model: the model (in train mode).
        open_paths: paths from :func:`resolve_open_layers`.

    Returns:
        ``{parameter name: requires_grad before}``, for :func:`restore_requires_grad`.
    """
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    model.train()
    open_set = set(open_paths)

    def set_all(module: nn.Module, prefix: str, is_open: bool) -> None:
        module.train(is_open)
        for name, p in module.named_parameters(prefix=prefix.rstrip(".")):
            p.requires_grad_(before[name] if is_open else False)

    def visit(module: nn.Module, prefix: str) -> None:
        for name, p in module.named_parameters(prefix=prefix.rstrip("."), recurse=False):
            p.requires_grad_(before[name] if name in open_set else False)
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path in open_set:
                set_all(child, path + ".", True)
            elif any(o.startswith(path + ".") for o in open_set):
                visit(child, path + ".")  # an ancestor: stays in train mode
            else:
                set_all(child, path + ".", False)

    visit(model, "")
    return before


def restore_requires_grad(model: nn.Module, flags: Dict[str, bool]) -> None:
    """Put ``model`` in train mode and give each parameter its saved ``requires_grad``."""
    model.train()
    for name, p in model.named_parameters():
        p.requires_grad_(flags.get(name, True))


@HOOK_REGISTRY.register()
class FixBaseHook(HookBase):
    """Train only ``open_layers`` during the first ``fixbase_epochs`` epochs (see the module doc).

    Args:
        fixbase_epochs: epochs (counted from 0, part of the main loop's epochs) with the base frozen.
        open_layers: module paths or last parts of paths trained meanwhile (torchreid: "classifier").
    """

    @configurable
    def __init__(self, *, fixbase_epochs: int, open_layers: Sequence[str] = ("classifier",)):
        if fixbase_epochs < 0:
            raise ConfigError(f"SOLVER.FIXBASE_EPOCHS must be >= 0, got {fixbase_epochs}.")
        if fixbase_epochs > 0 and not open_layers:
            raise ConfigError("SOLVER.FIXBASE_EPOCHS > 0 needs MODEL.OPEN_LAYERS (the modules trained meanwhile, "
                              "e.g. ['classifier']).")
        self.fixbase_epochs = int(fixbase_epochs)
        self.open_layers = list(open_layers)
        self._saved: Dict[str, bool] = {}

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {"fixbase_epochs": cfg.SOLVER.FIXBASE_EPOCHS, "open_layers": list(cfg.MODEL.OPEN_LAYERS)}

    def active(self, epoch: int) -> bool:
        """Returns: whether epoch ``epoch`` (0-based) trains only the open layers."""
        return epoch < self.fixbase_epochs

    def before_epoch(self):
        model = unwrap_model(self.trainer.model)
        if self.active(self.trainer.epoch):
            paths = resolve_open_layers(model, self.open_layers)
            flags = open_specified_layers(model, paths)
            if not self._saved:
                self._saved = flags
                logger.info(f"Fixbase: epochs 1-{self.fixbase_epochs} train only {', '.join(paths)}.")
        elif self._saved:
            restore_requires_grad(model, self._saved)
            self._saved = {}
            logger.info("Fixbase over: every layer trains.")

    def after_train(self):
        if self._saved:  # training stopped inside the fixbase epochs: leave the model as it was built
            restore_requires_grad(unwrap_model(self.trainer.model), self._saved)
            self._saved = {}
