"""A run's folder (``OUTPUT_DIR``): one run per folder, one process writing it, no leftovers.

* :func:`find_run_files`: what marks a folder as holding a run (checkpoints, their pointer,
  ``metrics.json``, results). A new run refuses such a folder unless the user resumes it
  (``--resume``), replaces it (``--overwrite``) or starts in a fresh sub-folder
  (``--fresh-subdir``).
* :class:`RunLock`: a lock file naming the process that writes the folder; a second run on the
  same folder stops with a message; a lock left by a killed process is detected and taken over.
* :func:`remove_leftovers`: temporary files of writes that were killed halfway.
* :func:`is_elastic_restart`: a process restarted by ``torchrun --max-restarts`` resumes on its
  own.
"""

import datetime
import glob
import json
import logging
import os
import socket
from typing import List, Optional

from clipreid_plugin.utils.errors import ConfigError

__all__ = ["RUN_FILES", "find_run_files", "holds_run", "remove_run_files", "remove_leftovers", "RunLock",
           "is_elastic_restart", "record_torchrun_job", "check_writable", "fresh_subdir"]

logger = logging.getLogger(__name__)

# Files (patterns) a run writes into OUTPUT_DIR; --overwrite removes them.
RUN_FILES = ("model_*.pth", "last_checkpoint", "metrics.json", "results.json", "results.csv", "results.md",
             "config.yaml", "run_info.json", "evaluations.json", "log.txt", "log.txt.rank*", "events.out.tfevents.*",
             "*_results.npz", "*_per_query*.npz", "torchrun_run_id")
# The files that mean "a run happened here" (a folder with only a log of a run that failed at
# start-up is not a run).
_MARKERS = ("model_*.pth", "last_checkpoint", "metrics.json", "results.json")
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
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, f".write_test.{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"OUTPUT_DIR {output_dir} is not writable ({e.strerror or e}). Choose another OUTPUT_DIR "
                          f"or fix the folder's permissions.") from None


def fresh_subdir(output_dir: str) -> str:
    """Returns: a new, not yet existing sub-folder of ``output_dir`` named by the current time."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = os.path.join(output_dir, stamp), 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(output_dir, f"{stamp}-{n}")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class RunLock:
    """An exclusive lock on a run folder: the file ``OUTPUT_DIR/.run.lock`` with the owner's
    host, pid and start time, created atomically.

    A lock of a process on this host that no longer exists is stale and taken over (with a
    warning); a lock held by a live process, or by a process on another host, stops the run
    with a message naming it.

    Args:
        output_dir: the run folder.
    """

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOCK_FILE)
        self.held = False

    def _owner(self) -> Optional[dict]:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def acquire(self) -> Optional[str]:
        """Take the lock.

        Returns:
            A note to log when a stale lock was taken over, else None.

        Raises:
            ConfigError: another live process writes this folder.
        """
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
        note = None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner.get("host") == me["host"] and owner.get("pid") == me["pid"]:
                    self.held = True  # this process already holds it (several runs in one process)
                    return None
                if owner is None or (owner.get("host") == me["host"] and not _pid_alive(int(owner.get("pid", -1)))):
                    note = (f"Taking over the lock of {os.path.dirname(self.path)} from a process that no longer "
                            f"runs ({owner}).")
                    os.remove(self.path)
                    continue
                where = "this host" if owner.get("host") == me["host"] else f"host {owner.get('host')}"
                raise ConfigError(
                    f"OUTPUT_DIR {os.path.dirname(self.path)} is in use by process {owner.get('pid')} on {where} "
                    f"(started {owner.get('started')}). Use another OUTPUT_DIR, or wait for that run to end. If it "
                    f"is not running any more, delete {self.path}.") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return note
        raise ConfigError(f"Could not take the lock {self.path}; delete it if no run uses the folder.")

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held:
            owner = self._owner()
            if owner is not None and owner.get("pid") == os.getpid():
                os.remove(self.path)
            self.held = False
