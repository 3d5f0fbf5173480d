"""Helpers shared by the benchmark scripts: what machine a figure comes from, device sync,
timing, JSON results."""

import json
import os
import platform
import time
from typing import Callable, Dict, List

import torch

__all__ = ["machine_line", "sync", "rate", "write_json", "cpu_model"]


def cpu_model() -> str:
    """Returns: the CPU model name from /proc/cpuinfo (or platform's guess)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line(device: str = "cpu") -> str:
    """Returns: one line naming the CPU, its cores, the load average (uptime), torch and the device."""
    load = "n/a"
    if hasattr(os, "getloadavg"):
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    dev = device
    if str(device).startswith("cuda") and torch.cuda.is_available():
        dev = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return (f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {load}; torch {torch.__version__}; "
            f"device {dev}")


def sync(device) -> None:
    """Wait for the device's queued work (a no-op on a CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn: Callable[[], int], device, warmup: int, steps: int) -> float:
    """Items per second of ``fn`` (which returns the items it processed), after ``warmup`` calls.

    Args:
        fn: one step; returns how many items (images) it handled.
        device: synchronised before starting and stopping the clock.
        warmup: untimed calls first (compilation, cuDNN autotuning, allocator warm-up).
        steps: timed calls.

    Returns:
        items per second over the timed calls.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    start, n = time.perf_counter(), 0
    for _ in range(steps):
        n += fn()
    sync(device)
    return n / (time.perf_counter() - start)


def write_json(path: str, rows: List[Dict]) -> None:
    """Write ``rows`` to ``path`` as JSON (nothing when ``path`` is empty)."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(rows, f, indent=2)
