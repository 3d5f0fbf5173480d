"""run_tool: the toolkit's own errors become one line (exit status 2); a bug keeps its traceback."""

import pytest

from clipreid_plugin.config import ConfigError
from clipreid_plugin.data import DatasetError
from clipreid_plugin.utils.checkpoint import CheckpointError
from clipreid_plugin.utils.cli import run_tool
from clipreid_plugin.utils.errors import (InputFileError, InvalidInputError, MissingDependencyError, PluginError,
                                          ToolkitError, TrainingDivergedError, UnknownComponentError)


@pytest.mark.parametrize("error", [ConfigError("MODEL.X is wrong"), DatasetError("folder missing"),
                                   CheckpointError("truncated"), PluginError("no plugin"),
                                   MissingDependencyError("pip install x"), InputFileError("no image"),
                                   InvalidInputError("bad file"), TrainingDivergedError("NaN"),
                                   UnknownComponentError("No object named 'Foo'")])
def test_toolkit_errors_are_one_line(error, capsys, monkeypatch):
    monkeypatch.delenv("CLIPREID_DEBUG", raising=False)

    def main():
        raise error

    assert run_tool(main) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {error.args[0]}", "(set CLIPREID_DEBUG=1 for the full traceback)"]
    assert isinstance(error, ToolkitError)


@pytest.mark.parametrize("bug", [KeyError("stray"), ValueError("bad arithmetic"), IndexError("off by one")])
def test_other_exceptions_keep_their_traceback(bug):
    def main():
        raise bug

    with pytest.raises(type(bug)):
        run_tool(main)


def test_debug_switch_reraises_toolkit_errors(monkeypatch):
    monkeypatch.setenv("CLIPREID_DEBUG", "1")

    def main():
        raise ConfigError("x")

    with pytest.raises(ConfigError):
        run_tool(main)
