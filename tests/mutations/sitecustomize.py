"""Test-only: breaks training on purpose, in every Python process of a mutation-check run.

tests/seams/test_mutations.py runs training tests in a child pytest with this folder first on
PYTHONPATH and ``CLIPREID_TEST_MUTATION`` naming one mutation. Python imports ``sitecustomize``
at start-up, so the mutation reaches the child pytest and every process it starts
(``tools/train_net.py`` subprocesses included). Nothing here is imported by the package or by
an ordinary test run: the folder is never on the path otherwise, and without the variable this
module does nothing.

Mutations (each patches the engine's public classes, whatever builds them):

* ``noop_step``: ``optimizer.step()`` does nothing (set on every optimiser an
  :class:`OptimizationStep` is given, so the main loop and every training phase);
* ``frozen_backbone``: ``requires_grad`` False on the model's ``backbone`` before every step of a
  :class:`SimpleTrainer`;
* ``zero_loss_weight``: every loss of a step (``loss*`` entries) multiplied by 0, as if every
  loss scale were 0.
"""

import os
import types

MUTATIONS = ("noop_step", "frozen_backbone", "zero_loss_weight")


def _noop_step():
    from clipreid_plugin.engine.train_loop import OptimizationStep

    init = OptimizationStep.__init__

    def mutated_init(self, optimizer, *args, **kwargs):
        init(self, optimizer, *args, **kwargs)
        # a bound method, as torch's LR schedulers expect to wrap one
        optimizer.step = types.MethodType(lambda opt, *a, **k: None, optimizer)

    OptimizationStep.__init__ = mutated_init


def _frozen_backbone():
    from clipreid_plugin.engine.train_loop import SimpleTrainer
    from clipreid_plugin.utils.checkpoint import unwrap_model

    run_step = SimpleTrainer.run_step

    def mutated_run_step(self, batch):
        backbone = getattr(unwrap_model(self.model), "backbone", None)
        if backbone is not None:
            backbone.requires_grad_(False)
        return run_step(self, batch)

    SimpleTrainer.run_step = mutated_run_step


def _zero_loss_weight():
    from clipreid_plugin.engine.train_loop import OptimizationStep

    call = OptimizationStep.__call__

    def mutated_call(self, compute_losses):
        def zero_weighted():
            losses = compute_losses()
            if not isinstance(losses, dict):
                losses = {"total_loss": losses}
            return {k: v * 0 if k.startswith("loss") or k == "total_loss" else v for k, v in losses.items()}

        return call(self, zero_weighted)

    OptimizationStep.__call__ = mutated_call


def _apply(name: str) -> None:
    if name not in MUTATIONS:
        raise SystemExit(f"CLIPREID_TEST_MUTATION={name!r} is not one of {', '.join(MUTATIONS)}")
    {"noop_step": _noop_step, "frozen_backbone": _frozen_backbone, "zero_loss_weight": _zero_loss_weight}[name]()


if os.environ.get("CLIPREID_TEST_MUTATION"):
    _apply(os.environ["CLIPREID_TEST_MUTATION"])
