#!/usr/bin/env python
"""Check this toolkit against tensors produced by the reference CLIP-ReID code or by a peer toolkit.

For each case file (format: ../shared/reference/README.md) the equivalent model is built from
this toolkit's config (the reference config values of ``meta.config`` translated), the
reference state dict is loaded, and every output and schedule the file holds is recomputed
and compared. One table per case: output, max error, tolerance, PASS/FAIL.

    python tools/check_parity.py ../shared/reference/case_vit_person.pt ../shared/reference/case_rn_person.pt
    python tools/check_parity.py --dtype float64 ../shared/reference/float64/case_*.pt
    python tools/check_parity.py my_case.pt --tiny-clip-dir /path/to/clip_weights --device cuda

``--dtype float64`` replays in double precision (model and inputs ``.double()``, nothing cast
down) and requires every row within ``1e-9 x max(1, max|ref|)``: the exact-parity check, for
cases the reference computed in float64. In float32 (the default; published checkpoints), a
case with a float64 twin in ``float64/`` beside it is bounded by the reference's own float32
error (2 x |ref32 - ref64| per output), since float32 results depend on the CPU's summation
order; without one the fixed bounds of ``parity_harness.case_replay`` apply.

The CLIP weights file named by ``meta.tiny_clip_file`` is looked up next to the case file (and
in its parent folder, for the float64 cases) unless ``--tiny-clip-dir`` says where it is.

A peer case (``meta.peer``: ``fast-reid`` or ``torchreid``; format ``../shared/reference/peers/README.md``) is
replayed by that peer's module in :data:`PEER_REPLAYS` (the case's own config converted, the
peer's weights through the checkpoint converter) with one row per output (families of many
tensors, e.g. the gradients, as one row naming the worst):

    python tools/check_parity.py --dtype float64 ../shared/reference/peers/float64/fastreid_sbs_r50_ibn.pt
    python tools/check_parity.py --dtype float64 ../shared/reference/peers/float64/torchreid_osnet_x1_0.pt

Exit status: 0 when every row of every case passes, 1 when a row fails (or the model cannot be
rebuilt from the case), 2 when a case file cannot be used (missing, unreadable, or lacking keys
of the format, or its CLIP weights are not found).
"""

import argparse
import importlib
import logging
import os
import sys
import time
from typing import List, Optional

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import torch
from tabulate import tabulate

from parity_harness.case_replay import CaseFormatError, ParityRow, float64_case_path, load_case, run_case

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2

# meta.peer of a peer case -> the module replaying it (its run_peer_case(case, path, device, dtype) -> rows)
PEER_REPLAYS = {"fast-reid": "parity_harness.fastreid_replay", "torchreid": "parity_harness.torchreid_replay"}


def read_peer_case(path: str) -> Optional[dict]:
    """The case dict when ``path`` is a peer case (it has ``meta.peer``), else None (a CLIP-ReID
    reference case, or a file :func:`load_case` will report)."""
    if not os.path.isfile(path):
        return None
    try:
        case = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file: load_case reports it
        return None
    meta = case.get("meta") if isinstance(case, dict) else None
    return case if isinstance(meta, dict) and "peer" in meta else None


def peer_rows(case: dict, path: str, device: str, dtype: torch.dtype) -> List[ParityRow]:
    """Replay a peer case with its module from :data:`PEER_REPLAYS`."""
    peer = case["meta"]["peer"]
    if peer not in PEER_REPLAYS:
        raise CaseFormatError(f"{path}: meta.peer {peer!r} has no replay here (known: {', '.join(PEER_REPLAYS)}).")
    return importlib.import_module(PEER_REPLAYS[peer]).run_peer_case(case, path, device, dtype)


def format_rows(rows: List[ParityRow]) -> str:
    """Returns: the table of one case (failures carry their reason)."""
    table = [[r.name, f"{r.max_abs_err:.2e}", r.tolerance, "PASS" if r.passed else "FAIL", r.note] for r in rows]
    return tabulate(table, headers=["output", "max error", "tolerance", "result", "note"], tablefmt="simple")


def _clip_dir(case: dict, path: str, tiny_clip_dir: Optional[str]) -> str:
    """Where the case's CLIP weights are: --tiny-clip-dir, the case's folder, or its parent
    (the float64 cases share the weights of the float32 ones)."""
    if tiny_clip_dir:
        return tiny_clip_dir
    here = os.path.dirname(os.path.abspath(path))
    name = case["meta"]["tiny_clip_file"]
    for folder in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(folder, name)):
            return folder
    return here


def check_file(path: str, tiny_clip_dir: Optional[str], device: str, dtype: torch.dtype) -> int:
    """Check one case file and print its table. Returns: an exit status (see the module doc)."""
    start = time.perf_counter()
    twin = None
    try:
        case = read_peer_case(path)
        if case is not None:
            rows = peer_rows(case, path, device, dtype)
        else:
            case = load_case(path)
            twin = float64_case_path(path) if dtype == torch.float32 else None
            reference64 = load_case(twin) if twin else None
            rows = run_case(case, _clip_dir(case, path, tiny_clip_dir), device, dtype, reference64)
    except CaseFormatError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:  # the translated config or the reference weights do not fit this toolkit
        print(f"ERROR: {path}: cannot rebuild the reference model: {e}", file=sys.stderr)
        return EXIT_MISMATCH
    failed = [r for r in rows if not r.passed]
    description = case["meta"].get("description", "")
    print(f"\n== {path}" + (f"  ({description})" if description else "")
          + f"\n   replayed in {str(dtype).replace('torch.', '')}"
          + (f"; float32 bounds from the reference's own rounding ({twin})" if twin else ""))
    print(format_rows(rows))
    print(f"{path}: {len(rows) - len(failed)}/{len(rows)} passed, {len(failed)} failed "
          f"({time.perf_counter() - start:.1f} s)")
    return EXIT_MISMATCH if failed else EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    """Run the checks for the files in ``argv`` (default: the command line).

    Returns:
        0 when everything passed, 1 on a mismatch, 2 when a file could not be used (the
        worst status over all files).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="+", metavar="CASE.pt", help="reference case files")
    parser.add_argument("--tiny-clip-dir", default=None,
                        help="folder holding each case's meta.tiny_clip_file (default: the case file's folder)")
    parser.add_argument("--device", default="cpu", help="torch device to run on (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                        help="replay precision: float64 for the reference's float64 cases (exact parity, "
                             "1e-9 bound); float32 for published checkpoints (default)")
    args = parser.parse_args(argv)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    statuses = [check_file(path, args.tiny_clip_dir, args.device, dtype) for path in args.cases]
    worst = max(statuses)
    bad = sum(s == EXIT_BAD_INPUT for s in statuses)
    mismatched = sum(s == EXIT_MISMATCH for s in statuses)
    print(f"\nSummary: {len(statuses) - bad - mismatched}/{len(statuses)} case(s) passed"
          + (f", {mismatched} with failures" if mismatched else "") + (f", {bad} unusable" if bad else "") + ".")
    return worst


if __name__ == "__main__":
    sys.exit(main())
