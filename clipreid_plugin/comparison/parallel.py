"""Spread the runs of a benchmark over processes: one run per GPU, or CPU processes.

Each worker is a fresh (spawned) Python process that runs one planned run at a time with
:func:`~.runner.execute_run`, so it reads back finished runs and continues interrupted ones
exactly as a serial benchmark does. With GPUs, there are at most as many workers as GPUs and
each sees only its own (``CUDA_VISIBLE_DEVICES``, set before CUDA starts in the worker); without
them, the CPU cores are shared out (``torch.set_num_threads``), so K workers do not each start a
thread per core. A worker that dies (killed, out of memory) makes its run a failed row.
"""

import concurrent.futures
import logging
import multiprocessing
import os
from typing import Dict, List, Sequence

import torch

from .records import failed_record
from .runner import execute_run

__all__ = ["worker_slots", "run_parallel"]

logger = logging.getLogger("clipreid_plugin.comparison")


def worker_slots(jobs: int) -> List[Dict]:
    """How the workers are set up.

    Args:
        jobs: processes asked for.

    Returns:
        One dict per worker: ``{"device": GPU index or None, "threads": CPU threads}``
        (as many workers as GPUs at most, when there are GPUs).
    """
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        return [{"device": i, "threads": max(1, (os.cpu_count() or 1) // min(jobs, gpus))}
                for i in range(min(jobs, gpus))]
    return [{"device": None, "threads": max(1, (os.cpu_count() or 1) // jobs)} for _ in range(jobs)]


def _init_worker(slots) -> None:
    slot = slots.get()
    if slot["device"] is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot["device"])
    os.environ["OMP_NUM_THREADS"] = str(slot["threads"])
    torch.set_num_threads(slot["threads"])


def _run(plan, opts, evaluate_untrained, rerank, measure) -> Dict:
    return execute_run(plan, opts, evaluate_untrained, rerank, measure)


def run_parallel(plans: Sequence, opts: Sequence[str], jobs: int, evaluate_untrained: bool = False,
                 rerank: bool = False, measure: bool = True) -> List[Dict]:
    """Run ``plans`` (:class:`~.runner.RunPlan`) in ``jobs`` worker processes.

    Returns:
        Their records, in the order of ``plans``.
    """
    slots = worker_slots(jobs)
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or OpenMP state
    queue = ctx.Queue()
    for slot in slots:
        queue.put(slot)
    where = "GPU " + ", ".join(str(s["device"]) for s in slots) if slots[0]["device"] is not None else \
        f"CPU, {slots[0]['threads']} thread(s) each"
    logger.info(f"Benchmark: {len(plans)} runs over {len(slots)} worker processes ({where}).")
    records: List[Dict] = [None] * len(plans)
    with concurrent.futures.ProcessPoolExecutor(len(slots), mp_context=ctx, initializer=_init_worker,
                                                initargs=(queue,)) as pool:
        futures = {pool.submit(_run, p, list(opts), evaluate_untrained, rerank, measure): i for i, p in enumerate(plans)}
        for fut in concurrent.futures.as_completed(futures):
            i = futures[fut]
            try:
                records[i] = fut.result()
            except Exception as e:  # noqa: BLE001 - a dead worker fails its run, not the benchmark
                p = plans[i]
                records[i] = failed_record(p.spec.name, p.spec.config, "?", p.tests_resolved, p.output_dir,
                                           f"worker process: {type(e).__name__}: {e}")
                records[i]["seed"] = p.seed
    return records
