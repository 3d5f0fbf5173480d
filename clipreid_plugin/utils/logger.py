"""Logging: coloured console output on the main process, one log file per rank."""

import logging
import os
import sys
import time
from typing import Optional

from termcolor import colored

__all__ = ["setup_logger", "log_every_n_seconds", "FILE_ONLY", "log_once"]

# ``logger.error(msg, extra=FILE_ONLY)``: a record for the log file, kept off the console (a
# one-line error the tool prints itself, diagnostics the user does not need to read)
FILE_ONLY = {"file_only": True}


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


class _ColorfulFormatter(logging.Formatter):
    """Prefix WARNING/ERROR records with a coloured tag (console only)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        log = super().formatMessage(record)
        if record.levelno == logging.WARNING:
            prefix = colored("WARNING", "red", attrs=["blink"])
        elif record.levelno >= logging.ERROR:
            prefix = colored("ERROR", "red", attrs=["blink", "underline"])
        else:
            return log
        return prefix + " " + log


class _StdoutHandler(logging.StreamHandler):
    """A console handler that writes to ``sys.stdout`` as it is when a record is emitted, not as
    it was at setup: code that swaps ``sys.stdout`` after a tool set the logger up (a test's
    output capture, a notebook) keeps getting the messages instead of a closed stream's error."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):  # StreamHandler.__init__ assigns it; the property always answers
        pass


def setup_logger(output: Optional[str] = None, distributed_rank: int = 0, *, color: bool = True,
                 name: str = "clipreid_plugin") -> logging.Logger:
    """Configure the package logger (idempotent per output/rank).

    Args:
        output: a folder (the log goes to ``output/log.txt``) or a file path; None = console only.
            Ranks other than 0 write ``log.txt.rank{R}``.
        distributed_rank: global rank; only rank 0 logs to the console.
        color: colour the console output (ignored when stdout is not a TTY).
        name: logger name.

    Returns:
        The configured logger.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    plain = logging.Formatter("[%(asctime)s %(name)s]: %(message)s", datefmt="%m/%d %H:%M:%S")
    if distributed_rank == 0:
        ch = _StdoutHandler()
        ch.setLevel(logging.INFO)
        ch.addFilter(_not_file_only)
        use_color = color and sys.stdout.isatty()
        ch.setFormatter(
            _ColorfulFormatter(colored("[%(asctime)s %(name)s]: ", "green") + "%(message)s",
                               datefmt="%m/%d %H:%M:%S")
            if use_color else plain
        )
        logger.addHandler(ch)
    if output is not None:
        filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename = f"{filename}.rank{distributed_rank}"
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        fh = logging.FileHandler(filename, mode="a")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(plain)
        logger.addHandler(fh)
    return logger


_LAST_LOG = {}


def log_every_n_seconds(logger: logging.Logger, msg: str, n: float = 5.0, key: str = "") -> None:
    """Log ``msg`` at INFO at most once every ``n`` seconds per ``key`` (progress of long loops)."""
    now = time.perf_counter()
    k = key or msg[:40]
    if now - _LAST_LOG.get(k, -1e9) >= n:
        _LAST_LOG[k] = now
        logger.info(msg)


_LOGGED_ONCE = set()


def log_once(logger: logging.Logger, msg: str, level: int = logging.INFO, key: str = "") -> None:
    """Log ``msg`` the first time this process asks for ``key`` (default: the message itself):
    notices about the data or the environment that every dataset build or evaluation would
    otherwise repeat."""
    k = key or msg
    if k not in _LOGGED_ONCE:
        _LOGGED_ONCE.add(k)
        logger.log(level, msg)
