"""A run's folder (``OUTPUT_DIR``): one run per folder, one process writing it, no leftovers.

* :func:`find_run_files`: what marks a folder as holding a run (checkpoints, their pointer,
  results; a training that stopped before its first checkpoint leaves no run, and
  :func:`remove_failed_attempt` clears its curves for the next one). A new run refuses such a folder unless the user resumes it
  (``--resume``), replaces it (``--overwrite``) or starts in a fresh sub-folder
  (``--fresh-subdir``).
* :class:`RunLock`: an OS lock (``flock``) on a file naming the process that writes the folder,
  held for the run's life; a second run on the same folder stops with a message; the lock of a
  killed process is free again (the kernel drops it) and is taken over.
* :func:`remove_leftovers`: temporary files of writes that were killed halfway.
* :func:`is_elastic_restart`: a process restarted by ``torchrun --max-restarts`` resumes on its
  own.
"""

import datetime
import fcntl
import glob
import json
import logging
import os
import socket
import time
from typing import Dict, List, Optional, Tuple

from clipreid_plugin.utils import file_io
from clipreid_plugin.utils.errors import ConfigError, OutputWriteError

__all__ = ["RUN_FILES", "find_run_files", "holds_run", "remove_run_files", "remove_failed_attempt",
           "remove_leftovers", "RunLock",
           "is_elastic_restart", "record_torchrun_job", "check_writable", "fresh_subdir"]

logger = logging.getLogger(__name__)

# Files (patterns) a run writes into OUTPUT_DIR; --overwrite removes them.
RUN_FILES = ("model_*.pth", "last_checkpoint", "metrics.json", "results.json", "results.csv", "results.md",
             "config.yaml", "run_info.json", "evaluations.json", "log.txt", "log.txt.rank*", "events.out.tfevents.*",
             "*_results.npz", "*_per_query*.npz", "torchrun_run_id")
# The files that mean "a run happened here": something to resume or results. A training that
# stopped before its first checkpoint (a config mistake, a loss that diverged at once, a kill)
# left nothing to continue: its folder is free for a new run, which first removes that
# attempt's curves (ATTEMPT_FILES) so they do not mix with its own; log.txt keeps its history.
_MARKERS = ("model_*.pth", "last_checkpoint", "results.json")
ATTEMPT_FILES = ("metrics.json", "evaluations.json", "events.out.tfevents.*")
LOCK_FILE = ".run.lock"


def find_run_files(output_dir: str, patterns=_MARKERS) -> List[str]:
    """Returns: the files of ``output_dir`` matching ``patterns`` (default: the run markers), sorted."""
    found = set()
    for pattern in patterns:
        found.update(glob.glob(os.path.join(glob.escape(output_dir), pattern)))
    return sorted(found)


def holds_run(output_dir: str) -> bool:
    """Returns: whether ``output_dir`` holds a run's checkpoints, metrics or results."""
    return bool(find_run_files(output_dir))


def remove_run_files(output_dir: str) -> List[str]:
    """Delete every file a run writes in ``output_dir`` (for ``--overwrite``).

    Returns:
        The removed paths.
    """
    removed = find_run_files(output_dir, RUN_FILES)
    for path in removed:
        os.remove(path)
    return removed


def remove_failed_attempt(output_dir: str) -> List[str]:
    """Delete the curves of a training that stopped before its first checkpoint (``metrics.json``,
    TensorBoard events), so that a new run in ``output_dir`` does not append to them. Does nothing
    in a folder that holds a run (:func:`holds_run`).

    Returns:
        The removed paths.
    """
    if holds_run(output_dir):
        return []
    removed = find_run_files(output_dir, ATTEMPT_FILES)
    for path in removed:
        os.remove(path)
    return removed


def remove_leftovers(output_dir: str) -> List[str]:
    """Delete the temporary files of atomic writes that were killed halfway (``*.tmp``).

    Returns:
        The removed paths.
    """
    removed = glob.glob(os.path.join(glob.escape(output_dir), "*.tmp"))
    for path in removed:
        os.remove(path)
    if removed:
        logger.info(f"Removed {len(removed)} partial file(s) of an interrupted write: "
                    + ", ".join(os.path.basename(p) for p in removed))
    return removed


TORCHRUN_ID_FILE = "torchrun_run_id"


def is_elastic_restart(output_dir: str) -> bool:
    """Whether torchrun restarted this process after a failure of its job.

    True when ``TORCHELASTIC_RESTART_COUNT`` > 0, or when the folder was started by this very
    torchrun job (its ``TORCHELASTIC_RUN_ID`` recorded by :func:`record_torchrun_job`): with
    several nodes, an agent that restarts its workers because another node re-joined does not
    count a restart.
    """
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0:
        return True
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    path = os.path.join(output_dir, TORCHRUN_ID_FILE)
    if not run_id or not os.path.isfile(path):
        return False
    with open(path) as f:
        return f.read().strip() == run_id


def record_torchrun_job(output_dir: str) -> None:
    """Record the torchrun job (``TORCHELASTIC_RUN_ID``) that writes ``output_dir``, if any."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if run_id:
        with open(os.path.join(output_dir, TORCHRUN_ID_FILE), "w") as f:
            f.write(run_id)


def check_writable(output_dir: str) -> None:
    """Create ``output_dir`` if needed and check that files can be written there.

    Raises:
        ConfigError: naming the folder and the reason (read-only, no permission, a file there).
    """
    try:
        file_io.check_writable(os.path.join(output_dir, ".write_test"))
    except OutputWriteError as e:
        raise ConfigError(f"OUTPUT_DIR {output_dir} is not writable ({e.cause}). Choose another OUTPUT_DIR "
                          f"or fix the folder's permissions.") from None


def fresh_subdir(output_dir: str) -> str:
    """Returns: a new, not yet existing sub-folder of ``output_dir`` named by the current time."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = os.path.join(output_dir, stamp), 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(output_dir, f"{stamp}-{n}")
    return path


class RunLock:
    """An exclusive lock on a run folder, held by the operating system for the run's life.

    The file ``OUTPUT_DIR/.run.lock`` is locked with ``flock`` and records its owner's host,
    pid and start time. The kernel grants the lock to exactly one process and drops it when
    that process ends, however it ends: a lock left by a killed run is free, and taking it
    over is the same single ``flock`` call as taking a fresh one (no "is the owner alive?"
    check that two processes could both pass). A contender that finds the lock held stops
    with a message naming the owner.

    The file is removed on :meth:`release` while still locked; a contender that locked a file
    already unlinked this way sees that the path names another file (or none) and tries again.
    Locks on a network file system work where it supports ``flock`` (NFSv4, Lustre with
    ``flock``); one that does not is reported when the lock is taken.

    A process may take the lock of a folder it already holds (several runs in one process,
    e.g. ``tools/benchmark.py``): the inner :class:`RunLock` shares the held lock and its
    :meth:`release` leaves it to the outer one.

    Args:
        output_dir: the run folder.
    """

    # path -> (pid, fd) of the locks this process holds
    _held: Dict[str, Tuple[int, int]] = {}

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOCK_FILE)
        self._key = os.path.realpath(self.path)
        self.held = False
        self._fd: Optional[int] = None

    def _owner(self) -> Optional[dict]:
        # the holder writes its record just after locking: a contender may read it empty once
        for _ in range(20):
            try:
                with open(self.path) as f:
                    return json.load(f)
            except (OSError, ValueError):
                time.sleep(0.01)
        return None

    def _lock_file(self) -> Tuple[Optional[int], Optional[dict]]:
        """One attempt: (locked fd, previous record) or (None, None) when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None, None
        except OSError as e:
            os.close(fd)
            raise ConfigError(f"Cannot lock {self.path} ({e.strerror or e}): the file system of OUTPUT_DIR does "
                              f"not support file locks. Choose an OUTPUT_DIR on a local disk.") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed the file between our open and our flock
            os.close(fd)
            return -1, None
        with os.fdopen(os.dup(fd), "r") as f:
            text = f.read()
        try:
            previous = json.loads(text) if text.strip() else None
        except ValueError:
            previous = {"record": text[:80]}
        return fd, previous

    def acquire(self) -> Optional[str]:
        """Take the lock.

        Returns:
            A note to log when the lock of a run that ended without releasing it was taken
            over, else None.

        Raises:
            ConfigError: another live process writes this folder.
        """
        held = RunLock._held.get(self._key)
        if held is not None and held[0] == os.getpid():
            self.held = True  # this process already holds it; the outer RunLock releases it
            return None
        for _ in range(100):
            fd, previous = self._lock_file()
            if fd is None:
                owner = self._owner() or {}
                where = "this host" if owner.get("host") == socket.gethostname() else f"host {owner.get('host')}"
                raise ConfigError(
                    f"OUTPUT_DIR {os.path.dirname(self.path)} is in use by process {owner.get('pid')} on {where} "
                    f"(started {owner.get('started')}). Use another OUTPUT_DIR, or wait for that run to end.") from None
            if fd >= 0:
                break
        else:
            raise ConfigError(f"Could not take the lock {self.path}: other processes keep replacing it.")
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd, self.held = fd, True
        RunLock._held[self._key] = (os.getpid(), fd)
        if previous:
            return (f"Taking over the lock of {os.path.dirname(self.path)} from a process that no longer runs "
                    f"({previous}).")
        return None

    def release(self) -> None:
        """Remove the lock file and drop the lock, if this :class:`RunLock` took it."""
        if self._fd is not None and RunLock._held.get(self._key) == (os.getpid(), self._fd):
            try:
                os.remove(self.path)  # while still locked: no one can hold this file meanwhile
            except FileNotFoundError:
                pass
            os.close(self._fd)
            del RunLock._held[self._key]
        self._fd, self.held = None, False
