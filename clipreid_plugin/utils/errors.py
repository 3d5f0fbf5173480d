"""The toolkit's own error types: mistakes a user can fix (config, data, weights, plugins).

Command-line tools turn these, and only these, into one-line messages (:func:`run_tool`);
any other exception is a bug and keeps its traceback. Each subclass also derives from the
built-in exception a caller would expect (``ValueError`` for a bad value, ...), so
``except ValueError`` keeps working.
"""

__all__ = ["ToolkitError", "ConfigError", "UnknownComponentError", "PluginError", "MissingDependencyError",
           "InputFileError", "InvalidInputError", "TrainingDivergedError", "OutputWriteError"]


class ToolkitError(Exception):
    """Base class of every error whose message tells the user what to fix."""


class ConfigError(ToolkitError, ValueError):
    """A config file or override names an unknown key, gives a value of the wrong type, or a
    combination of values that cannot run."""


class UnknownComponentError(ToolkitError, KeyError):
    """A registry has no component of the name a config gives (the message lists the registered ones)."""

    def __str__(self) -> str:  # KeyError would print the message quoted, as a repr
        return str(self.args[0]) if self.args else ""


class PluginError(ToolkitError, ImportError):
    """A plugin named in ``PLUGINS`` or in the entry-point group cannot be imported."""


class MissingDependencyError(ToolkitError, ImportError):
    """An optional package (an extra such as ``[onnx]``) is needed but not installed."""


class InputFileError(ToolkitError, FileNotFoundError):
    """A file or folder given to a tool is missing or holds nothing usable."""


class InvalidInputError(ToolkitError, ValueError):
    """A file or value given to a tool exists but cannot be used (wrong format, out of range)."""


class TrainingDivergedError(ToolkitError, FloatingPointError):
    """The loss, a gradient or a weight became NaN or infinite; the last good checkpoint is kept."""


class OutputWriteError(ToolkitError, OSError):
    """A file the user asked for (or a run's file) cannot be written: the folder is read-only,
    the disk is full, ... The message names the destination (never a temporary file) and the
    cause; :attr:`path` and :attr:`cause` hold them for callers that add their own context."""

    def __init__(self, path: str, cause: str, message: str = ""):
        super().__init__(message or f"Could not write {path}: {cause}.")
        self.path, self.cause = path, cause

    def __str__(self) -> str:  # OSError would format its own args
        return str(self.args[0])
