"""File helpers: iopath's path manager, atomic writes (temp file + rename) and the one way a
write fails.

Every file the toolkit writes for a user goes through :func:`atomic_write`; a tool that writes
after long work calls :func:`check_writable` on its destination first. Both raise
:class:`~clipreid_plugin.utils.errors.OutputWriteError` naming the destination the user gave
(never the temporary file) and the operating system's cause ("No space left on device",
"Permission denied", "Read-only file system"): one line, whatever library was writing. A
library that turns the OSError of a full disk into its own error (``torch.save`` reports
"[enforce fail at inline_container.cc] unexpected pos") still gives the real cause, because
the file object it writes to records the first OSError.
"""

import errno
import io
import os
import tempfile
from typing import Callable, Optional

from iopath.common.file_io import g_pathmgr as PathManager

from .errors import OutputWriteError

__all__ = ["PathManager", "atomic_write", "atomic_write_text", "check_writable", "os_cause"]


def os_cause(error: OSError) -> str:
    """Returns: the operating system's words for ``error`` ("No space left on device")."""
    if error.errno is not None and error.strerror:
        return error.strerror
    return os.strerror(error.errno) if error.errno else str(error)


class _RecordingFile:
    """The temporary file as ``write_fn`` sees it: every call passes through, and the first
    OSError of a write or flush is kept (a library may replace it by a vaguer error)."""

    def __init__(self, f):
        self._f = f
        self.error: Optional[OSError] = None

    def _record(self, method, *args):
        try:
            return method(*args)
        except OSError as e:
            self.error = self.error or e
            raise

    def write(self, data):
        return self._record(self._f.write, data)

    def flush(self):
        return self._record(self._f.flush)

    def __getattr__(self, name):
        return getattr(self._f, name)


def _make_folder(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:  # a file of that name: the cause is that it is not a folder
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), folder) from None


def _temp_file(folder: str, name: str, mode: str):
    """Returns: (an open temporary file in ``folder`` with a plain open()'s permissions, its path)."""
    fd, tmp = tempfile.mkstemp(prefix=name + ".", suffix=".tmp", dir=folder)
    # mkstemp creates the file 0600; give it the permissions a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return os.fdopen(fd, "wb"), tmp


def atomic_write(path: str, write_fn: Callable[[object], None], mode: str = "wb") -> None:
    """Write a file so that readers only ever see the old or the complete new content.

    The data goes to a temporary file in the same folder, is flushed and fsync'ed, then
    renamed over ``path`` (``os.replace`` is atomic on POSIX). A failure midway leaves the
    previous file intact and removes the temporary file.

    Args:
        path: destination path (local file system).
        write_fn: called with the open temporary file object; writes the content.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).

    Raises:
        OutputWriteError: the folder cannot be created or written, or the disk filled up
            (naming ``path`` and the cause). Other errors of ``write_fn`` pass unchanged.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp, recorder = None, None
    try:
        _make_folder(folder)
        raw, tmp = _temp_file(folder, os.path.basename(path), mode)
        with raw:
            f = raw if mode == "wb" else _text(raw)
            recorder = _RecordingFile(f)
            write_fn(recorder)
            recorder.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        tmp = None
    except BaseException as e:
        cause = recorder.error if recorder is not None and recorder.error is not None else e
        if isinstance(cause, OSError) and not isinstance(cause, OutputWriteError):
            raise OutputWriteError(path, os_cause(cause)) from e
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _text(raw):
    return io.TextIOWrapper(raw, encoding="utf-8", write_through=True)


def atomic_write_text(path: str, text: str) -> None:
    """Atomically write ``text`` to ``path`` (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text), mode="w")


def check_writable(path: str) -> None:
    """Check, before long work, that ``path`` can be written: its folder exists or can be
    created, a file can be created there and hold a byte (a full disk fails here).

    Args:
        path: the file the work will write.

    Raises:
        OutputWriteError: naming ``path`` and the cause.
    """
    if os.path.isdir(path):
        raise OutputWriteError(path, os.strerror(errno.EISDIR), f"Could not write {path}: it is a folder; give a "
                                                                f"file name.")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        _make_folder(folder)
        raw, tmp = _temp_file(folder, os.path.basename(path), "wb")
        try:
            with raw:
                raw.write(b"\0")
                raw.flush()
                os.fsync(raw.fileno())
        finally:
            os.remove(tmp)
    except OSError as e:
        raise OutputWriteError(path, os_cause(e)) from None
