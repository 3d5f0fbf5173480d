"""Start one training process per device: ``torch.multiprocessing`` spawn, or under torchrun.

NCCL is used when CUDA devices are available, gloo otherwise (CPU processes), so the same
command runs multi-process on a laptop, in CI, and on a GPU cluster.
"""

import contextlib
import datetime
import importlib
import logging
import os
import socket
import sys
import tempfile
import time
from typing import Callable, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clipreid_plugin.utils import comm
from clipreid_plugin.utils.errors import ConfigError, ToolkitError

__all__ = ["launch", "find_free_port", "running_under_torchrun", "take_captured_output"]

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


def find_free_port() -> int:
    """Returns: a free TCP port on localhost (for single-machine rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running_under_torchrun() -> bool:
    """Returns: whether the process was started by torchrun / torch.distributed.run."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ
                                                   and "LOCAL_RANK" in os.environ)


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = "auto", args: Tuple = ()) -> None:
    """Run ``main_func(*args)`` in every process of a (possibly) distributed job.

    Args:
        main_func: the per-process entry point.
        num_gpus_per_machine: processes per machine (GPUs; CPU processes when there is no GPU).
        num_machines: number of machines.
        machine_rank: rank of this machine.
        dist_url: rendezvous URL, ``tcp://host:port``; ``"auto"`` picks a free local port (single
            machine only).
        args: arguments passed to ``main_func``.
    """
    if running_under_torchrun():
        _init_from_env()
        main_func(*args)
        _cleanup()
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ConfigError("--dist-url auto only works on one machine; give tcp://HOST:PORT of machine 0.")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise ConfigError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} GPUs are visible.")
    try:
        mp.start_processes(
            _distributed_worker, nprocs=num_gpus_per_machine, start_method="spawn", daemon=False,
            args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args),
        )
    except mp.ProcessRaisedException as e:
        raise _toolkit_error_of(e) or e from None


# What the C++ side printed while this process waited for a restarted job's store (see
# _stderr_captured); default_setup writes it to the run's log file once that file is open.
_CAPTURED: List[str] = []


def take_captured_output() -> List[str]:
    """Returns (and forgets): the C++ diagnostics captured before the log file existed."""
    out = list(_CAPTURED)
    _CAPTURED.clear()
    return out


@contextlib.contextmanager
def _stderr_captured(what: str):
    """Send what is written to file descriptor 2 (where c10d's C++ code logs) to a temporary file
    while the block runs, and keep it for the log file (:func:`take_captured_output`). Python's
    ``sys.stderr`` is flushed first so nothing of it is mixed in. If the block fails, the captured
    text goes back to the console: an error keeps its diagnostics."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace").strip()
            if text and failed:
                print(text, file=sys.stderr)
            elif text:
                _CAPTURED.append(f"{what}:\n{text}")


def _toolkit_error_of(error: Exception) -> Optional[ToolkitError]:
    """The toolkit error a child process raised, rebuilt from the text torch passes up (its
    last line is ``module.ClassName: message``); None for any other error (a bug keeps its
    traceback)."""
    last = str(error).rstrip().splitlines()[-1]
    name, sep, message = last.partition(": ")
    module, _, cls_name = name.rpartition(".")
    if not sep or not module.startswith("clipreid_plugin"):
        return None
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError):
        return None
    if isinstance(cls, type) and issubclass(cls, ToolkitError):
        try:
            return cls(message)
        except TypeError:
            return ToolkitError(message)
    return None


def _distributed_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args):
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend=_backend(), init_method=dist_url, world_size=world_size,
                                rank=global_rank, timeout=DEFAULT_TIMEOUT)
    except Exception as e:
        logging.getLogger(__name__).error(f"Process group URL: {dist_url}")
        raise ConfigError(f"Could not join the process group at {dist_url}: {e}") from e
    comm.set_local_rank(local_rank)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        _cleanup()


def _attempt_store(rank: int, world_size: int) -> dist.Store:
    """A store of this torchrun attempt alone, hosted by rank 0 (under torchrun's agent store).

    torchrun's agent store outlives a restart of the worker group: with one agent, and with
    several agents sharing the rendezvous' TCP store (the default), the keys of the failed
    attempt (gloo peer addresses, the NCCL id) are still there, and a restarted worker that
    reads them connects to a process that is gone. The agents' restart counts can differ (an
    agent restarts for a membership change without counting it), so they cannot name the
    attempt either. Rank 0 therefore hosts a fresh store on a free port and publishes its
    address in the agent store; the other ranks connect to the published address, and re-read
    it while it still names the previous attempt's store (nothing listens there any more: the
    agents stop every old worker before the new rendezvous round).
    """
    addr = os.environ["MASTER_ADDR"]
    agent_store = dist.TCPStore(addr, int(os.environ["MASTER_PORT"]), world_size, is_master=False,
                                timeout=DEFAULT_TIMEOUT)
    key = f"clipreid/attempt_store/{os.environ.get('TORCHELASTIC_RUN_ID', '')}"
    if rank == 0:
        store = dist.TCPStore(addr, 0, world_size, is_master=True, timeout=DEFAULT_TIMEOUT, wait_for_workers=False)
        agent_store.set(key, f"{addr}:{store.port}")
        return store
    deadline = time.monotonic() + DEFAULT_TIMEOUT.total_seconds()
    # each failed try prints ~20 lines of C++ socket-timeout trace: expected while the job
    # restarts, so they go to the log file, not the user's console
    with _stderr_captured("c10d while waiting for the store of this torchrun attempt"):
        while True:
            host, port = agent_store.get(key).decode().rsplit(":", 1)
            try:
                store = dist.TCPStore(host, int(port), world_size, is_master=False,
                                      timeout=datetime.timedelta(seconds=5))
            except RuntimeError:  # DistStoreError: the previous attempt's address: nobody listens
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            store.set_timeout(DEFAULT_TIMEOUT)
            return store


def _init_from_env() -> None:
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if dist.is_initialized():
        pass
    elif os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true":
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        dist.init_process_group(backend=_backend(), store=_attempt_store(rank, world), rank=rank, world_size=world,
                                timeout=DEFAULT_TIMEOUT)
    else:
        dist.init_process_group(backend=_backend(), init_method="env://", timeout=DEFAULT_TIMEOUT)
    comm.set_local_rank(local_rank)


def _cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()
