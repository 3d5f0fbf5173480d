"""A disk that fills up, for the tests of failed writes: every file the toolkit writes goes
through ``clipreid_plugin.utils.file_io.atomic_write``'s temporary file, whose writes raise
``OSError(ENOSPC)`` once the disk is "full", as a real full disk does (the library writing,
``torch.save`` or ``np.savez``, sees the error where it would)."""

import errno
import fnmatch
import os

from clipreid_plugin.utils import file_io


class _FullFile:
    """The first ``free_bytes`` bytes land; the write that passes them lands in part and raises.
    (With 64 free bytes ``torch.save`` reports "unexpected pos 64 vs 0", as on a real full disk,
    not the OSError.)"""

    def __init__(self, f, free_bytes):
        self._f = f
        self._free = free_bytes
        self._written = 0

    def write(self, data):
        room = self._free - self._written
        if len(data) <= room:
            self._written += len(data)
            return self._f.write(data)
        self._f.write(bytes(data)[:room] if not isinstance(data, str) else data[:room])
        self._written = self._free
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def full_disk(monkeypatch, after_files: int = 0, only: str = "*", free_bytes: int = 0) -> None:
    """From now on, the temporary file of every atomic write whose destination's name matches
    ``only`` finds the disk full (``free_bytes`` left), after ``after_files`` such writes went
    through."""
    real = file_io._temp_file
    done = []

    def temp_file(folder, name, mode):
        f, tmp = real(folder, name, mode)
        if not fnmatch.fnmatch(name, only):
            return f, tmp
        done.append(name)
        return (f if len(done) <= after_files else _FullFile(f, free_bytes)), tmp

    monkeypatch.setattr(file_io, "_temp_file", temp_file)
