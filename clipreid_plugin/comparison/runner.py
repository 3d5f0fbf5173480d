"""Run methods (configs) in-process: train, evaluate, measure, and write each run's benchmark record.

Runs use the ordinary :class:`~clipreid_plugin.engine.DefaultTrainer`, so a benchmark run is the
same as ``tools/train_net.py`` with the same overrides (its output folder also gets
``results.json`` and the per-query file). An exception inside a run becomes a
``"failed: <reason>"`` record (with the traceback in the run's log) instead of ending the whole
benchmark.

A benchmark is a list of runs (:func:`plan_runs`: method x dataset x seed), each in its own
folder. They run one after the other, or spread over processes (:mod:`.parallel`). A run whose
folder already holds its finished results is read back, never rerun; one that was interrupted
continues from its last checkpoint.
"""

import argparse
import logging
import os
import time
import traceback
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from clipreid_plugin.config import CfgNode, load_cfg
from clipreid_plugin.config.extensions import plugin_providing_group
from clipreid_plugin.engine import DefaultTrainer, default_setup, describe_model, run_training
from clipreid_plugin.engine.run_dir import holds_run
from clipreid_plugin.evaluation.results import load_per_query
from clipreid_plugin.utils.errors import InputFileError

from . import model_stats
from .comparisons import camera_pair_table, find_per_query
from .records import collect_run, failed_record, failure_status, new_record, write_record
from .seeds import aggregate_seeds, collect_seeded, seed_dir, seed_folders

__all__ = ["MethodSpec", "RunPlan", "parse_method", "build_run_cfg", "run_method", "run_output_dir", "plan_runs",
           "run_benchmark", "collect_folders", "BENCHMARK_DEFAULTS"]

# What every benchmark run evaluates besides the metrics (the user's overrides come after and win):
# the top-10 of each query (the report's ranked lists) and the camera-pair breakdown.
BENCHMARK_DEFAULTS = ("TEST.PER_QUERY.TOPK", "10", "TEST.PER_QUERY.CAMERA_PAIRS", "True")

logger = logging.getLogger("clipreid_plugin.comparison")


class MethodSpec(NamedTuple):
    """A method to benchmark: a display name and its config file."""

    name: str
    config: str


def parse_method(text: str) -> MethodSpec:
    """``NAME=path/to/config.yml`` or ``path/to/config.yml`` (name = the file's stem).

    Raises:
        FileNotFoundError: the config file does not exist.
    """
    name, sep, path = text.partition("=")
    if not sep:
        name, path = os.path.splitext(os.path.basename(text))[0], text
    if not os.path.isfile(path):
        raise InputFileError(f"Method config {path!r} does not exist (give NAME=CONFIG.yml or CONFIG.yml).")
    return MethodSpec(name, path)


class RunPlan(NamedTuple):
    """One run of a benchmark.

    Attributes:
        spec: the method.
        train: DATASETS.NAMES override (None = the config's).
        tests: DATASETS.TESTS override (None = the config's).
        tests_resolved: the test datasets the run evaluates (for its row).
        seed: SOLVER.SEED override (None = the config's).
        output_dir: the run's folder.
        row: index of the table row the run belongs to (seeds of one row share it).
    """

    spec: MethodSpec
    train: Optional[List[str]]
    tests: Optional[List[str]]
    tests_resolved: List[str]
    seed: Optional[int]
    output_dir: str
    row: int


def build_run_cfg(spec: MethodSpec, opts: Sequence[str], output_dir: Optional[str] = None,
                  dataset: Optional[str] = None, seed: Optional[int] = None, train: Optional[Sequence[str]] = None,
                  tests: Optional[Sequence[str]] = None) -> CfgNode:
    """The frozen config of one run: the benchmark's defaults, the method's file, the shared
    overrides, then dataset, seed and output folder.

    Args:
        spec: the method.
        opts: ``KEY VALUE`` overrides applied to every run.
        output_dir: OUTPUT_DIR of the run (None = keep the config's).
        dataset: train and test on this dataset instead of the config's (None = keep).
        seed: SOLVER.SEED (None = keep).
        train, tests: DATASETS.NAMES / DATASETS.TESTS (cross-domain runs; None = keep).

    Returns:
        The frozen config.
    """
    extra = []
    if dataset:
        extra += ["DATASETS.NAMES", [dataset], "DATASETS.TESTS", [dataset]]
    if train:
        extra += ["DATASETS.NAMES", list(train)]
    if tests:
        extra += ["DATASETS.TESTS", list(tests)]
    if seed is not None:
        extra += ["SOLVER.SEED", int(seed)]
    if output_dir:
        extra += ["OUTPUT_DIR", output_dir]
    return load_cfg(spec.config, list(BENCHMARK_DEFAULTS) + overrides_for(spec, opts) + extra)


def overrides_for(spec: MethodSpec, opts: Sequence[str]) -> List[str]:
    """The shared overrides that apply to one method: a key of a plugin the method does not
    activate (``CLIPREID.STAGE1.MAX_EPOCHS`` for a bag-of-tricks method) is left out for it, with a
    note; every other key applies, and a typo still fails as usual.

    Args:
        spec: the method.
        opts: flat ``KEY VALUE`` overrides shared by every method.

    Returns:
        The overrides for this method.
    """
    pairs = list(zip(list(opts)[0::2], list(opts)[1::2]))
    plugins = [x for key, value in pairs if key == "PLUGINS" for x in (key, value)]
    groups = set(load_cfg(spec.config, plugins, freeze=False).keys())
    kept: List[str] = []
    for key, value in pairs:
        group = key.split(".")[0]
        if group not in groups and plugin_providing_group(group):
            logger.info(f"{spec.name}: {key} belongs to a plugin this method does not use; not applied to it.")
            continue
        kept += [key, value]
    return kept


def run_output_dir(root: str, method: str, datasets: Sequence[str], train: Optional[Sequence[str]] = None) -> str:
    """Returns: where a benchmark run writes (and --collect reads): ``root/<method>/<dataset[+dataset...]>``,
    or ``root/<method>/<train>_to_<tests>`` when the run trains on other datasets than it tests
    (cross-domain); seeds add ``/seed<k>``."""
    tests = "+".join(datasets)
    if train and list(train) != list(datasets):
        tests = f"{'+'.join(train)}_to_{tests}"
    return os.path.join(root, method, tests)


def plan_runs(methods: Sequence[MethodSpec], output_root: str, opts: Sequence[str] = (),
              datasets: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None,
              train_datasets: Optional[Sequence[str]] = None,
              test_datasets: Optional[Sequence[str]] = None) -> Tuple[List[RunPlan], List[Dict]]:
    """The runs of a benchmark, row by row.

    Rows: each method x each ``datasets`` entry (train and test on it), or x each
    ``train_datasets`` entry (trained on it, tested on every ``test_datasets`` entry:
    cross-domain), or once with the config's own datasets. Each row runs once per seed.

    Returns:
        (plans, failed): the runs, and a failed record per row whose config does not load
        (its row index in ``"row"``).
    """
    if train_datasets:
        variants = [(None, [t], list(test_datasets) if test_datasets else None) for t in train_datasets]
    elif test_datasets:
        variants = [(None, None, list(test_datasets))]
    else:
        variants = [(d, None, None) for d in (datasets or [None])]
    plans, failed = [], []
    row = -1
    for spec in methods:
        for dataset, train, tests in variants:
            row += 1
            try:
                cfg = build_run_cfg(spec, opts, dataset=dataset, train=train, tests=tests)
                resolved, trained = list(cfg.DATASETS.TESTS), list(cfg.DATASETS.NAMES)
            except Exception as e:  # noqa: BLE001 - a config that does not load is a failed row
                resolved = tests or [dataset or "?"]
                out = run_output_dir(output_root, spec.name, resolved, train)
                rec = failed_record(spec.name, spec.config, "?", resolved, out, f"{type(e).__name__}: {e}")
                rec["row"] = row
                failed.append(rec)
                continue
            out = run_output_dir(output_root, spec.name, resolved, trained if train else None)
            train_override = [dataset] if dataset else train
            test_override = [dataset] if dataset else tests
            for seed in (seeds or [None]):
                plans.append(RunPlan(spec, train_override, test_override, resolved, seed,
                                     out if seed is None else seed_dir(out, seed), row))
    return plans, failed


def finished_record(plan: RunPlan) -> Optional[Dict]:
    """Returns: the record of a run whose folder already holds its finished results, else None."""
    if not os.path.isdir(plan.output_dir):
        return None
    rec = collect_run(plan.output_dir, plan.spec.name, plan.spec.config, plan.tests_resolved)
    if rec["status"] != "ok" or not all(rec["results"].get(d) for d in plan.tests_resolved):
        return None
    rec["seed"] = plan.seed
    return rec


def execute_run(plan: RunPlan, opts: Sequence[str], evaluate_untrained: bool = False, rerank: bool = False,
                measure: bool = True) -> Dict:
    """Run one planned run, or read it back when its folder holds its finished results.

    Returns:
        Its record.
    """
    done = finished_record(plan)
    if done is not None:
        logger.info(f"Benchmark: {plan.output_dir} holds finished results: read back, not rerun "
                    f"(delete the folder to run it again).")
        return done
    logger.info(f"Benchmark: {plan.spec.name} on {'+'.join(plan.tests_resolved)}"
                f"{'' if plan.seed is None else f' seed {plan.seed}'} -> {plan.output_dir}")
    return run_method(plan.spec, opts, plan.output_dir, evaluate_untrained=evaluate_untrained, rerank=rerank,
                      measure=measure, seed=plan.seed, train=plan.train, tests=plan.tests)


def run_method(spec: MethodSpec, opts: Sequence[str], output_dir: str, dataset: Optional[str] = None,
               evaluate_untrained: bool = False, rerank: bool = False, measure: bool = True,
               seed: Optional[int] = None, train: Optional[Sequence[str]] = None,
               tests: Optional[Sequence[str]] = None) -> Dict:
    """Train and evaluate one method; write ``results.json`` and ``benchmark_record.json`` to its folder.

    A folder that holds an interrupted run of it (checkpoints, no results) is continued from its
    last checkpoint.

    Args:
        spec: the method.
        opts: shared ``KEY VALUE`` overrides.
        output_dir: the run's OUTPUT_DIR.
        dataset: train/test on this dataset instead of the config's.
        evaluate_untrained: also evaluate the model before training (the demo's "untrained" columns).
        rerank: also evaluate the trained model with k-reciprocal re-ranking (``TEST.RERANK.*``).
        measure: compute parameters, GFLOPs per image and inference images/s.
        seed: SOLVER.SEED (None = the config's).
        train, tests: DATASETS.NAMES / TESTS overrides (cross-domain).

    Returns:
        The record (``status`` "ok" or "failed: <reason>").
    """
    record = new_record(spec.name, spec.config, "?", [dataset] if dataset else list(tests or []), output_dir)
    record["seed"] = seed
    try:
        cfg = build_run_cfg(spec, opts, output_dir, dataset, seed, train, tests)
        record.update(datasets=list(cfg.DATASETS.TESTS), train_datasets=list(cfg.DATASETS.NAMES))
        _train_and_measure(spec, cfg, record, evaluate_untrained, rerank, measure)
    except Exception as e:  # noqa: BLE001 - one failing method must not end the benchmark
        logger.error(f"Method {spec.name} ({spec.config}) failed:\n{traceback.format_exc()}")
        reason = e.args[0] if isinstance(e, KeyError) and e.args else e
        # keep what was measured before the failure (e.g. the results when only re-ranking failed)
        record["status"] = failure_status(f"{type(e).__name__}: {reason}")
    os.makedirs(output_dir, exist_ok=True)
    write_record(output_dir, record)
    return record


def _train_and_measure(spec: MethodSpec, cfg: CfgNode, record: Dict, evaluate_untrained: bool, rerank: bool,
                       measure: bool) -> None:
    """Fill ``record`` step by step (so a late failure keeps the earlier numbers)."""
    resume = holds_run(cfg.OUTPUT_DIR)  # an interrupted run of this benchmark: continue it
    cfg = default_setup(cfg, argparse.Namespace(config_file=spec.config, opts=[], resume=resume))
    start = {}

    def on_ready(ready: DefaultTrainer) -> None:
        record["backbone"] = describe_model(ready.model)
        if evaluate_untrained:
            record["untrained"] = DefaultTrainer.test(ready.cfg, ready.model)
        start["t"] = time.perf_counter()

    run = run_training(cfg, resume=resume, on_ready=on_ready)
    trainer = run["trainer"]
    record["train_s"] = time.perf_counter() - start["t"]  # wall clock, periodic evaluations included
    record["results"] = run["results"]
    for ds in record["datasets"]:
        path = find_per_query(cfg.OUTPUT_DIR, ds)
        table = camera_pair_table(load_per_query(path)) if path else None
        if table:
            record["camera_pairs"][ds] = table
    if rerank:
        rr_cfg = trainer.cfg.clone()
        rr_cfg.defrost()
        rr_cfg.TEST.RERANK.ENABLED = True
        rr_cfg.TEST.PER_QUERY.CAMERA_PAIRS = False  # the breakdown is of the plain evaluation
        rr_cfg.freeze()
        record["rerank"] = DefaultTrainer.test(rr_cfg, trainer.model)
    if measure:
        size: List[int] = list(trainer.cfg.INPUT.SIZE_TEST)
        record["params_m"] = model_stats.count_parameters(trainer.model) / 1e6
        record["gflops"] = model_stats.gflops_per_image(trainer.model, size)
        record["images_per_s"] = model_stats.images_per_second(trainer.model, size, trainer.cfg.TEST.IMS_PER_BATCH)


def group_rows(plans: Sequence[RunPlan], records: Sequence[Dict], failed: Sequence[Dict],
               seeded: bool) -> List[Dict]:
    """One table row per planned row: the run's record, or its seeds' aggregate (in row order)."""
    by_row: Dict[int, List[Dict]] = {}
    for plan, rec in zip(plans, records):
        by_row.setdefault(plan.row, []).append(rec)
    rows = {rec["row"]: rec for rec in failed}
    for row, recs in by_row.items():
        plan = next(p for p in plans if p.row == row)
        rows[row] = aggregate_seeds(recs, os.path.dirname(plan.output_dir)) if seeded else recs[0]
    return [rows[i] for i in sorted(rows)]


def run_benchmark(methods: Sequence[MethodSpec], output_root: str, opts: Sequence[str] = (),
                  datasets: Optional[Sequence[str]] = None, collect: bool = False, evaluate_untrained: bool = False,
                  rerank: bool = False, measure: bool = True, seeds: Optional[Sequence[int]] = None, jobs: int = 1,
                  train_datasets: Optional[Sequence[str]] = None,
                  test_datasets: Optional[Sequence[str]] = None) -> List[Dict]:
    """Run (or collect) every method on every dataset (x every seed); one record per table row.

    Each run writes to :func:`run_output_dir` ``(output_root, method, datasets)`` (``/seed<k>``
    with seeds). A run whose folder already holds its finished results is read back.

    Args:
        methods: the methods.
        output_root: folder holding every run's folder.
        opts: ``KEY VALUE`` overrides applied to every run (e.g. DATASETS.ROOT_DIR, a short schedule).
        datasets: run each method on each of these datasets (overriding DATASETS.NAMES / TESTS);
            None = each config's own datasets.
        collect: do not run; read the finished runs' folders (:func:`~.records.collect_run`;
            ``"missing: no folder ..."`` where a run was never made).
        evaluate_untrained, rerank, measure: see :func:`run_method`.
        seeds: run each row once per seed (SOLVER.SEED); the row shows their means and spread.
        jobs: processes to spread the runs over (:func:`~.parallel.run_parallel`).
        train_datasets, test_datasets: cross-domain rows: trained on each train dataset, tested on
            all test datasets.

    Returns:
        The records, in (method, dataset) order.
    """
    plans, failed = plan_runs(methods, output_root, opts, datasets, seeds, train_datasets, test_datasets)
    if collect:
        records = []
        for plan in plans:
            rec = collect_run(plan.output_dir, plan.spec.name, plan.spec.config, plan.tests_resolved)
            rec["seed"] = plan.seed
            records.append(rec)
    elif jobs > 1 and len(plans) > 1:
        from .parallel import run_parallel  # noqa: PLC0415 - parallel.py imports this module (its workers run execute_run)

        records = run_parallel(plans, opts, jobs, evaluate_untrained, rerank, measure)
    else:
        records = [execute_run(p, opts, evaluate_untrained, rerank, measure) for p in plans]
    return group_rows(plans, records, failed, seeded=bool(seeds))


def collect_folders(folders: Sequence[str]) -> List[Dict]:
    """Records of finished runs given by their folders (``DIR`` or ``NAME=DIR``), in order.

    Args:
        folders: run folders (OUTPUT_DIR of ``tools/train_net.py`` or of a benchmark run); the
            row is named NAME, else after the benchmark record's method, else the folder's name.
            A folder holding ``seed<k>`` sub-folders (``--seeds``) is one row over its seeds.

    Returns:
        One record per folder (see :func:`~.records.collect_run`).
    """
    records = []
    for text in folders:
        name, sep, path = text.partition("=")
        if not sep or os.path.isdir(text):
            name, path = None, text
        if seed_folders(path):
            rec = collect_seeded(path, name)
            rec["method"] = name or rec["method"] or os.path.basename(os.path.normpath(path))
            records.append(rec)
        else:
            records.append(collect_run(path, name))
    return records
