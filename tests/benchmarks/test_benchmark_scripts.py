"""The benchmark scripts run end to end on a CPU at tiny sizes (what a GPU machine runs at full size)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest


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
    for r in rows:  # what the ratio means is checked on known rates below
        assert r["reference_style"] > 0 and r["ours"] > 0 and r["ratio"] > 0
    # the bf16 run trained with device augmentation and torch.compile
    cfg = (tmp_path / "work" / "runs" / "train-bf16" / "config.yaml").read_text()
    assert "DEVICE_AUGMENT: true" in cfg and "COMPILE: default" in cfg


def _load_benchmark(name):
    """Import benchmarks/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(REPO, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rate_counts_items_over_the_timed_calls_only(monkeypatch):
    """rate(): 2 warm-up calls untimed, 3 timed calls of 4 items between clock readings 10.0 and
    13.0: 12 items / 3 s = 4.0 items/s (a fake clock, no real timing)."""
    bench_common = _load_benchmark("bench_common")
    clock = iter([10.0, 13.0])
    monkeypatch.setattr(bench_common.time, "perf_counter", lambda: next(clock))
    calls = []
    assert bench_common.rate(lambda: calls.append(1) or 4, "cpu", warmup=2, steps=3) == 4.0
    assert len(calls) == 5


def test_throughput_ratio_is_ours_over_reference_style(monkeypatch, tmp_path, capsys):
    """The table's ratio is ours / reference-style in images/s (above 1: ours is faster), on made-up
    rates: stage2 at 20 img/s reference-style and 30 ours gives 1.50; a failed part has no ratio
    and makes the exit status 1."""
    throughput = _load_benchmark("train_throughput")
    made_up = {("stage2", "reference-style"): 20.0, ("stage2", "ours"): 30.0,
               ("extract", "reference-style"): 8.0, ("extract", "ours"): "FAIL: RuntimeError: boom"}

    def fake_run_setting(args, model_name, setting, data_root, device, results, deadline):
        for part in args.parts:
            results[(model_name, part, setting)] = made_up[(part, setting)]

    monkeypatch.setattr(throughput, "run_setting", fake_run_setting)
    out_json = tmp_path / "rows.json"
    code = throughput.main(["--models", "rn50", "--parts", "stage2,extract", "--backbones", "", "--device", "cpu",
                            "--json", str(out_json)])
    assert code == 1
    rows = json.loads(out_json.read_text())
    assert rows[0] == {"model": "rn50", "part": "stage2", "reference_style": 20.0, "ours": 30.0,
                       "ratio": pytest.approx(1.5, abs=1e-12)}
    assert rows[1]["part"] == "extract" and rows[1]["ratio"] is None
    table = capsys.readouterr().out
    assert [line.split()[-1] for line in table.splitlines() if line.startswith("rn50")] == ["1.50x", "-"]
