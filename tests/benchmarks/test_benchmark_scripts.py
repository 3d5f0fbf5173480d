"""The benchmark scripts run end to end on a CPU at tiny sizes (what a GPU machine runs at full size)."""

import json
import os
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _write_corrupt_case(folder):
    folder.mkdir()
    (folder / "case_broken.pt").write_bytes(b"not a torch file")


def test_gpu_suite_cpu_smoke_runs_every_step_and_reports_a_failing_one(tmp_path):
    """Every step of benchmarks/gpu_suite.sh runs at tiny sizes; a broken reference case makes the
    parity step FAIL, the suite goes on, and the one table lists each step (exit status 1). The
    training-throughput step times every part of every model (train_throughput.py --tiny)."""
    ref = tmp_path / "reference"
    _write_corrupt_case(ref)  # no float64/ folder: that step is skipped
    env = dict(_env(), PYTHON=sys.executable, REFERENCE_DIR=str(ref))
    proc = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_suite.sh"), "--cpu-smoke", "--workdir",
                           str(tmp_path / "work")], capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:] + proc.stderr[-2000:]
    table = out[out.index("step "):]
    status = {line.split()[0]: line.split()[1] for line in table.splitlines()[2:]
              if line.strip() and not line.startswith(" ") and len(line.split()) > 1
              and line.split()[1] in ("PASS", "FAIL", "SKIP", "TIMEOUT")}
    assert status == {"parity-fp32": "FAIL", "parity-fp64": "SKIP", "train-fp16": "PASS", "train-bf16": "PASS",
                      "launch-torchrun": "PASS", "eval-market": "PASS", "eval-msmt17": "PASS", "loader": "PASS",
                      "throughput": "PASS"}, table
    assert "mAP" in table and "  vit16 stage2+data" in table and "failed, 1 skipped" in table
    rows = json.loads((tmp_path / "work" / "json" / "throughput.json").read_text())
    expected = {(m, p) for m in ("vit16", "vit12sie", "rn50")
                for p in ("stage2", "stage2+data", "stage1-features", "stage1-prompt", "extract")}
    assert {(r["model"], r["part"]) for r in rows} == expected
    for r in rows:
        assert r["reference_style"] > 0 and r["ours"] > 0
        assert abs(r["ratio"] - r["ours"] / r["reference_style"]) < 1e-9
    # the bf16 run trained with device augmentation and torch.compile
    cfg = (tmp_path / "work" / "runs" / "train-bf16" / "config.yaml").read_text()
    assert "DEVICE_AUGMENT: true" in cfg and "COMPILE: default" in cfg
