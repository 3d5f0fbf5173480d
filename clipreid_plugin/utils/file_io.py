"""File helpers: iopath's path manager and atomic writes (temp file + rename)."""

import os
import tempfile
from typing import Callable

from iopath.common.file_io import g_pathmgr as PathManager

__all__ = ["PathManager", "atomic_write", "atomic_write_text"]


def atomic_write(path: str, write_fn: Callable[[object], None], mode: str = "wb") -> None:
    """Write a file so that readers only ever see the old or the complete new content.

    The data goes to a temporary file in the same folder, is flushed and fsync'ed, then
    renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows). A crash midway
    leaves the previous file intact and at most a stray ``.tmp`` file.

    Args:
        path: destination path (local file system).
        write_fn: called with the open temporary file object; writes the content.
        mode: ``"wb"`` or ``"w"``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        # mkstemp creates the file 0600; give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Atomically write ``text`` to ``path`` (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text), mode="w")
