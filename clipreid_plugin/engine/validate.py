"""Validation of the whole config before a run reads data or builds a model.

A typo in ``TEST.EVALUATOR`` or a missing test-set folder must not surface after hours of
training. :func:`validate_config` resolves every registry name the run will use, checks
enumerated values and counts, opens every dataset folder the run reads, and runs the checks
components registered (:func:`~clipreid_plugin.config.register_config_check`). It also warns about
schedules that do not fit the run (warmup or LR steps beyond ``SOLVER.MAX_EPOCHS``) and caps
``DATALOADER.NUM_WORKERS`` at the CPUs there are.
"""

import logging
import os
from typing import Callable, List

from clipreid_plugin.config import CfgNode, as_name_list, lookup_key, registered_config_checks
# importing the host's packages creates every registry whose declared config keys are checked here
from clipreid_plugin.data import DATASET_REGISTRY, build_transforms, test_splits_only
from clipreid_plugin.evaluation.distance import METRICS
from clipreid_plugin.modeling.heads.bnneck import EVAL_FEATS, NECK_FEATS
from clipreid_plugin.solver.lr_scheduler import UNITS, WARMUP_METHODS, fastreid_first_stepping_epoch
from clipreid_plugin.utils.errors import ConfigError, ToolkitError
from clipreid_plugin.utils.plugins import active_roots
from clipreid_plugin.utils.registry import all_registries

__all__ = ["validate_config"]

logger = logging.getLogger(__name__)


def _registry_checks(cfg: CfgNode, training: bool):
    """Every config key a registry declared (:meth:`Registry.name_config_key`) resolves to
    registered names of components the config may build (a plugin's only where it is active)."""

    for registry in all_registries():
        for key, training_only in registry.config_keys.items():
            node, leaf = lookup_key(cfg, key)
            if node is None or (training_only and not training):
                continue
            for name in as_name_list(node[leaf]):
                yield lambda key=key, registry=registry, name=name: registry.get_for_key(name, key, cfg)


def _choice(key: str, value, valid) -> Callable[[], None]:
    def check():
        if value not in valid:
            raise ConfigError(f"{key} is {value!r}; valid: {', '.join(repr(v) for v in valid)}.")
    return check


def _at_least(key: str, value, minimum) -> Callable[[], None]:
    def check():
        if value < minimum:
            raise ConfigError(f"{key} is {value}; it must be >= {minimum}.")
    return check


def _value_checks(cfg: CfgNode, training: bool):

    s = cfg.SOLVER
    yield _choice("TEST.METRIC", cfg.TEST.METRIC, METRICS)
    yield _choice("MODEL.HEADS.NECK_FEAT", cfg.MODEL.HEADS.NECK_FEAT, NECK_FEATS)
    yield _choice("MODEL.HEADS.EVAL_FEAT", cfg.MODEL.HEADS.EVAL_FEAT, EVAL_FEATS)
    yield _choice("DATALOADER.DECODE_CACHE", cfg.DATALOADER.DECODE_CACHE, ("", "ram", "mmap"))
    yield _at_least("TEST.IMS_PER_BATCH", cfg.TEST.IMS_PER_BATCH, 1)
    yield lambda: build_transforms(cfg, is_train=False)
    if training:
        yield _choice("SOLVER.SCHED.UNIT", s.SCHED.UNIT, UNITS)
        yield _choice("SOLVER.WARMUP_METHOD", s.WARMUP_METHOD, WARMUP_METHODS)
        yield _choice("SOLVER.AMP.DTYPE", s.AMP.DTYPE, ("float16", "bfloat16"))
        yield _at_least("SOLVER.MAX_EPOCHS", s.MAX_EPOCHS, 0)
        yield _at_least("SOLVER.IMS_PER_BATCH", s.IMS_PER_BATCH, 1)
        yield _at_least("SOLVER.CHECKPOINT_PERIOD", s.CHECKPOINT_PERIOD, 1)
        yield _at_least("SOLVER.CHECKPOINT_MAX_KEEP", s.CHECKPOINT_MAX_KEEP, 0)
        yield _at_least("SOLVER.LOG_PERIOD_ITERS", s.LOG_PERIOD_ITERS, 1)
        yield _at_least("SOLVER.BASE_LR", s.BASE_LR, 0.0)
        yield _at_least("TEST.EVAL_PERIOD", cfg.TEST.EVAL_PERIOD, 0)
        yield _at_least("DATALOADER.NUM_INSTANCE", cfg.DATALOADER.NUM_INSTANCE, 1)
        yield lambda: build_transforms(cfg, is_train=True)


def _dataset_folder_checks(cfg: CfgNode, training: bool):
    """Open every dataset the run reads: a training set with its whole layout (the message then
    names the training folders too), a test-only set with its query/gallery splits only."""

    def open_full(name):
        DATASET_REGISTRY.build(name, cfg)

    def open_test_set(name):
        with test_splits_only():
            DATASET_REGISTRY.build(name, cfg)

    train_names = as_name_list(cfg.DATASETS.NAMES) if training else []
    for name in train_names:
        yield lambda name=name: open_full(name)
    for name in as_name_list(cfg.DATASETS.TESTS):
        if name not in train_names:
            yield lambda name=name: open_test_set(name)


def _schedule_warnings(cfg: CfgNode) -> List[str]:
    s = cfg.SOLVER
    notes = []
    if 0 < s.MAX_EPOCHS <= s.WARMUP_EPOCHS:
        notes.append(f"SOLVER.WARMUP_EPOCHS ({s.WARMUP_EPOCHS}) is not shorter than SOLVER.MAX_EPOCHS "
                     f"({s.MAX_EPOCHS}): the whole run trains inside the warmup, starting at "
                     f"{s.WARMUP_FACTOR} x SOLVER.BASE_LR. Shorten the warmup for a short run.")
    if s.SCHED.NAME == "WarmupMultiStepLR" and s.MAX_EPOCHS > 0:
        late = [e for e in s.STEPS_EPOCHS if e >= s.MAX_EPOCHS]
        if late:
            notes.append(f"SOLVER.STEPS_EPOCHS {list(s.STEPS_EPOCHS)}: the step(s) at {late} fall at or after "
                         f"SOLVER.MAX_EPOCHS ({s.MAX_EPOCHS}) and never happen.")
    if s.SCHED.NAME == "MultiStepLR" and s.MAX_EPOCHS > 0:
        # fast-reid counts its milestones from the first epoch end after the warmup and DELAY_EPOCHS;
        # without iterations per epoch, WARMUP_ITERS counts as its lower bound, one epoch
        warmup_epochs = int(s.WARMUP_EPOCHS) if int(s.WARMUP_ITERS) == 0 else 1
        first = fastreid_first_stepping_epoch(warmup_epochs, int(s.DELAY_EPOCHS))
        late = [m for m in s.STEPS_EPOCHS if m > s.MAX_EPOCHS - first]
        if late:
            notes.append(f"SOLVER.STEPS_EPOCHS {list(s.STEPS_EPOCHS)}: the step(s) at {late}, counted (as fast-reid "
                         f"counts them) from epoch {first} on, fall at or after SOLVER.MAX_EPOCHS ({s.MAX_EPOCHS}) "
                         f"and never happen.")
    return notes


def validate_config(cfg: CfgNode, training: bool = True) -> CfgNode:
    """Check the whole config before anything runs; warn about schedules that do not fit.

    Args:
        cfg: the frozen config.
        training: False for an evaluation-only run (training-only keys are not checked).

    Returns:
        The config to run with (``DATALOADER.NUM_WORKERS`` capped at the CPU count).

    Raises:
        ConfigError: one line naming every problem found (unknown registry names with the
            registered ones, values out of range, missing dataset folders, components' checks).
    """
    problems: List[str] = []
    checks = list(_registry_checks(cfg, training)) + list(_value_checks(cfg, training))
    roots = active_roots(cfg.get("PLUGINS", ()))
    checks += [lambda fn=fn: fn(cfg, training) for fn in registered_config_checks(roots).values()]
    for check in checks:
        try:
            check()
        except ToolkitError as e:
            problems.append(str(e))
    if not problems:  # the folders only once the names are known to resolve
        for check in _dataset_folder_checks(cfg, training):
            try:
                check()
            except ToolkitError as e:
                problems.append(str(e))
    if problems:
        more = f" Also: {' | '.join(problems[1:])}" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    if training:
        for note in _schedule_warnings(cfg):
            logger.warning(note)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cfg.DATALOADER.NUM_WORKERS > cpus:
        logger.info(f"DATALOADER.NUM_WORKERS {cfg.DATALOADER.NUM_WORKERS} is more than the {cpus} CPUs here: "
                    f"using {cpus} loader processes.")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = cpus
        cfg.freeze()
    return cfg
