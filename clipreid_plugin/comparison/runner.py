"""Run one method (a config) in-process: train, evaluate, measure, and write its benchmark record.

Runs use the ordinary :class:`~clipreid_plugin.engine.DefaultTrainer`, so a benchmark run is the
same as ``tools/train_net.py`` with the same overrides (its output folder also gets
``results.json``). An exception inside a run becomes a ``"failed: <reason>"`` record (with the
traceback in the run's log) instead of ending the whole benchmark.
"""

import argparse
import logging
import os
import time
import traceback
from typing import Dict, List, NamedTuple, Optional, Sequence

from clipreid_plugin.config import CfgNode, load_cfg
from clipreid_plugin.utils.errors import InputFileError

from .records import collect_run, failed_record, failure_status, new_record, write_record

__all__ = ["MethodSpec", "parse_method", "build_run_cfg", "run_method", "run_output_dir", "run_benchmark",
           "collect_folders"]

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


def build_run_cfg(spec: MethodSpec, opts: Sequence[str], output_dir: Optional[str] = None,
                  dataset: Optional[str] = None) -> CfgNode:
    """The frozen config of one run: the method's file, the shared overrides, dataset and output folder.

    Args:
        spec: the method.
        opts: ``KEY VALUE`` overrides applied to every run.
        output_dir: OUTPUT_DIR of the run (None = keep the config's).
        dataset: train and test on this dataset instead of the config's (None = keep).

    Returns:
        The frozen config.
    """
    extra = []
    if dataset:
        extra += ["DATASETS.NAMES", [dataset], "DATASETS.TESTS", [dataset]]
    if output_dir:
        extra += ["OUTPUT_DIR", output_dir]
    return load_cfg(spec.config, list(opts) + extra)


def run_output_dir(root: str, method: str, datasets: Sequence[str]) -> str:
    """Returns: ``root/<method>/<dataset[+dataset...]>``, where a benchmark run writes (and --collect reads)."""
    return os.path.join(root, method, "+".join(datasets))


def run_method(spec: MethodSpec, opts: Sequence[str], output_dir: str, dataset: Optional[str] = None,
               evaluate_untrained: bool = False, rerank: bool = False, measure: bool = True) -> Dict:
    """Train and evaluate one method; write ``results.json`` and ``benchmark_record.json`` to its folder.

    Args:
        spec: the method.
        opts: shared ``KEY VALUE`` overrides.
        output_dir: the run's OUTPUT_DIR.
        dataset: train/test on this dataset instead of the config's.
        evaluate_untrained: also evaluate the model before training (the demo's "untrained" columns).
        rerank: also evaluate the trained model with k-reciprocal re-ranking (``TEST.RERANK.*``).
        measure: compute parameters, GFLOPs per image and inference images/s.

    Returns:
        The record (``status`` "ok" or "failed: <reason>").
    """
    record = new_record(spec.name, spec.config, "?", [dataset] if dataset else [], output_dir)
    try:
        cfg = build_run_cfg(spec, opts, output_dir, dataset)
        record.update(datasets=list(cfg.DATASETS.TESTS))  # backbone: set once the model is built
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
    from clipreid_plugin.engine import DefaultTrainer, default_setup, describe_model, run_training

    from . import model_stats

    cfg = default_setup(cfg, argparse.Namespace(config_file=spec.config, opts=[]))
    start = {}

    def on_ready(ready: DefaultTrainer) -> None:
        record["backbone"] = describe_model(ready.model)
        if evaluate_untrained:
            record["untrained"] = DefaultTrainer.test(ready.cfg, ready.model)
        start["t"] = time.perf_counter()

    run = run_training(cfg, on_ready=on_ready)
    trainer = run["trainer"]
    record["train_s"] = time.perf_counter() - start["t"]  # wall clock, periodic evaluations included
    record["results"] = run["results"]
    if rerank:
        rr_cfg = trainer.cfg.clone()
        rr_cfg.defrost()
        rr_cfg.TEST.RERANK.ENABLED = True
        rr_cfg.freeze()
        record["rerank"] = DefaultTrainer.test(rr_cfg, trainer.model)
    if measure:
        size: List[int] = list(trainer.cfg.INPUT.SIZE_TEST)
        record["params_m"] = model_stats.count_parameters(trainer.model) / 1e6
        record["gflops"] = model_stats.gflops_per_image(trainer.model, size)
        record["images_per_s"] = model_stats.images_per_second(trainer.model, size, trainer.cfg.TEST.IMS_PER_BATCH)


def run_benchmark(methods: Sequence[MethodSpec], output_root: str, opts: Sequence[str] = (),
                  datasets: Optional[Sequence[str]] = None, collect: bool = False, evaluate_untrained: bool = False,
                  rerank: bool = False, measure: bool = True) -> List[Dict]:
    """Run (or collect) every method on every dataset; one record per (method, dataset) run.

    Each run writes to :func:`run_output_dir` ``(output_root, method, datasets)``.

    Args:
        methods: the methods.
        output_root: folder holding every run's folder.
        opts: ``KEY VALUE`` overrides applied to every run (e.g. DATASETS.ROOT_DIR, a short schedule).
        datasets: run each method on each of these datasets (overriding DATASETS.NAMES / TESTS);
            None = each config's own datasets.
        collect: do not run; read the finished runs' folders (:func:`~.records.collect_run`;
            ``"missing: no folder ..."`` where a run was never made).
        evaluate_untrained, rerank, measure: see :func:`run_method`.

    Returns:
        The records, in (method, dataset) order.
    """
    records = []
    for spec in methods:
        for dataset in (datasets or [None]):
            try:
                cfg = build_run_cfg(spec, opts, dataset=dataset)
                tests = list(cfg.DATASETS.TESTS)
            except Exception as e:  # noqa: BLE001 - a config that does not load is a failed row
                tests = [dataset or "?"]
                out = run_output_dir(output_root, spec.name, tests)
                records.append(failed_record(spec.name, spec.config, "?", tests, out, f"{type(e).__name__}: {e}"))
                continue
            out = run_output_dir(output_root, spec.name, tests)
            if collect:
                records.append(collect_run(out, spec.name, spec.config, tests))
            else:
                logger.info(f"Benchmark: {spec.name} on {'+'.join(tests)} -> {out}")
                records.append(run_method(spec, opts, out, dataset, evaluate_untrained, rerank, measure))
    return records


def collect_folders(folders: Sequence[str]) -> List[Dict]:
    """Records of finished runs given by their folders (``DIR`` or ``NAME=DIR``), in order.

    Args:
        folders: run folders (OUTPUT_DIR of ``tools/train_net.py`` or of a benchmark run); the
            row is named NAME, else after the benchmark record's method, else the folder's name.

    Returns:
        One record per folder (see :func:`~.records.collect_run`).
    """
    records = []
    for text in folders:
        name, sep, path = text.partition("=")
        if not sep or os.path.isdir(text):
            name, path = None, text
        records.append(collect_run(path, name))
    return records
