#!/usr/bin/env python
"""Check this toolkit against tensors produced by the reference CLIP-ReID code.

For each case file (format: ../shared/reference/README.md) the equivalent model is built from
this toolkit's config (the reference config values of ``meta.config`` translated), the
reference state dict is loaded, and every output and schedule the file holds is recomputed
and compared. One table per case: output, max error, tolerance, PASS/FAIL.

    python tools/check_parity.py ../shared/reference/case_vit_person.pt ../shared/reference/case_rn_person.pt
    python tools/check_parity.py my_case.pt --tiny-clip-dir /path/to/clip_weights --device cuda

The CLIP weights file named by ``meta.tiny_clip_file`` is looked up next to the case file
unless ``--tiny-clip-dir`` says where it is.

Exit status: 0 when every row of every case passes, 1 when a row fails (or the model cannot be
rebuilt from the case), 2 when a case file cannot be used (missing, unreadable, or lacking keys
of the format, or its CLIP weights are not found).
"""

import argparse
import logging
import os
import sys
import time
from typing import List, Optional

from tabulate import tabulate

from clipreid_plugin.interop.parity import CaseFormatError, ParityRow, load_case, run_case

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2


def format_rows(rows: List[ParityRow]) -> str:
    """Returns: the table of one case (failures carry their reason)."""
    table = [[r.name, f"{r.max_abs_err:.2e}", r.tolerance, "PASS" if r.passed else "FAIL", r.note] for r in rows]
    return tabulate(table, headers=["output", "max error", "tolerance", "result", "note"], tablefmt="simple")


def check_file(path: str, tiny_clip_dir: Optional[str], device: str) -> int:
    """Check one case file and print its table. Returns: an exit status (see the module doc)."""
    start = time.perf_counter()
    try:
        case = load_case(path)
        clip_dir = tiny_clip_dir or os.path.dirname(os.path.abspath(path))
        rows = run_case(case, clip_dir, device)
    except CaseFormatError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:  # the translated config or the reference weights do not fit this toolkit
        print(f"ERROR: {path}: cannot rebuild the reference model: {e}", file=sys.stderr)
        return EXIT_MISMATCH
    failed = [r for r in rows if not r.passed]
    description = case["meta"].get("description", "")
    print(f"\n== {path}" + (f"  ({description})" if description else ""))
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    statuses = [check_file(path, args.tiny_clip_dir, args.device) for path in args.cases]
    worst = max(statuses)
    bad = sum(s == EXIT_BAD_INPUT for s in statuses)
    mismatched = sum(s == EXIT_MISMATCH for s in statuses)
    print(f"\nSummary: {len(statuses) - bad - mismatched}/{len(statuses)} case(s) passed"
          + (f", {mismatched} with failures" if mismatched else "") + (f", {bad} unusable" if bad else "") + ".")
    return worst


if __name__ == "__main__":
    sys.exit(main())
