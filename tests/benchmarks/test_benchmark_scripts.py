"""The benchmark scripts run end to end on a CPU at tiny sizes (what a GPU machine runs at full size)."""

import json
import os
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_train_throughput_tiny_cpu_prints_every_part_of_every_model(tmp_path):
    out = tmp_path / "tt.json"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "train_throughput.py"), "--tiny",
                           "--device", "cpu", "--workers", "0", "--compile-mode", "", "--steps", "1", "--root", str(tmp_path / "data"),
                           "--json", str(out)], capture_output=True, text=True, timeout=300, env=_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    expected = {(m, p) for m in ("vit16", "vit12sie", "rn50")
                for p in ("stage2", "stage2+data", "stage1-features", "stage1-prompt", "extract")}
    assert {(r["model"], r["part"]) for r in rows} == expected
    for r in rows:
        assert r["reference_style"] > 0 and r["ours"] > 0
        assert abs(r["ratio"] - r["ours"] / r["reference_style"]) < 1e-9
    table = proc.stdout[proc.stdout.index("reference-style         ours"):]
    assert all(f"{m:10s} {p:16s}" in table for m, p in expected)


def _write_corrupt_case(folder):
    folder.mkdir()
    (folder / "case_broken.pt").write_bytes(b"not a torch file")


def test_gpu_suite_cpu_smoke_runs_every_step_and_reports_a_failing_one(tmp_path):
    """Every step of benchmarks/gpu_suite.sh runs at tiny sizes; a broken reference case makes the
    parity step FAIL, the suite goes on, and the one table lists each step (exit status 1)."""
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
    # the bf16 run trained with device augmentation and torch.compile
    cfg = (tmp_path / "work" / "runs" / "train-bf16" / "config.yaml").read_text()
    assert "DEVICE_AUGMENT: true" in cfg and "COMPILE: default" in cfg
