"""tools/check_parity.py run in-process, and on the shared reference cases once per precision.

The tool's own tests read its exit status and tables; the parity tests of the CLIP-ReID plugin
(tests/plugins/clipreid/reference/) check the tensors of the very replay the tool compared,
recorded on the way (``ParityRun.replays``), so that each shared case is replayed once per
precision in the whole suite.
"""

import contextlib
import importlib.util
import io
import os
from typing import Any, Dict, List, NamedTuple, Tuple

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE_FILES = ("case_vit_person.pt", "case_rn_person.pt")


def load_check_parity():
    """tools/check_parity.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("check_parity", os.path.join(REPO, "tools", "check_parity.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_check_parity(argv: List[str]) -> Tuple[int, str, str]:
    """Run the tool's ``main(argv)`` in-process. Returns: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = load_check_parity().main(argv)
    return status, out.getvalue(), err.getvalue()


class ParityRun(NamedTuple):
    """One run of the tool on both shared cases of one precision.

    Attributes:
        status, stdout, stderr: what the tool returned and printed.
        paths: the case files, in the order given to the tool.
        replays: ``{meta.case (e.g. "vit_person"): (ours, model)}``: the outputs the tool's replay
            computed (flattened names, as :func:`parity_harness.case_replay.replay_case` returns
            them) and the model after the replay.
    """

    status: int
    stdout: str
    stderr: str
    paths: List[str]
    replays: Dict[str, Tuple[Dict[str, Any], Any]]


def shared_case_paths(reference_dir: str, dtype: str) -> List[str]:
    """The two shared case files of a precision ("float32": the folder itself, "float64": float64/);
    skips the calling test when one is missing."""
    folder = reference_dir if dtype == "float32" else os.path.join(reference_dir, "float64")
    paths = [os.path.join(folder, name) for name in CASE_FILES]
    for path in paths:
        if not os.path.isfile(path):
            pytest.skip(f"reference case {path} not found")
    return paths


def run_shared_cases(reference_dir: str, dtype: str) -> ParityRun:
    """``check_parity.py [--dtype float64] <both shared cases>``, recording each replay.

    Args:
        reference_dir: ../shared/reference.
        dtype: "float32" (the cases beside their float64 twins: bounds from the reference's own
            float32 error) or "float64" (float64/ cases: the exact-parity bound).
    """
    from parity_harness import case_replay

    paths = shared_case_paths(reference_dir, dtype)
    replays: Dict[str, Tuple[Dict[str, Any], Any]] = {}
    replay_case = case_replay.replay_case

    def recording_replay(case, *args, **kwargs):
        ours, model, cfg = replay_case(case, *args, **kwargs)
        replays[case["meta"]["case"]] = (ours, model)
        return ours, model, cfg

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(case_replay, "replay_case", recording_replay)
        status, stdout, stderr = run_check_parity((["--dtype", "float64"] if dtype == "float64" else []) + paths)
    return ParityRun(status, stdout, stderr, paths, replays)
