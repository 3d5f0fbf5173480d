"""tools/train_net.py with two CPU processes (gloo): through --num-gpus and under torchrun."""

import json
import os
import subprocess
import sys

import torch

from test_train_net_cli import REPO, SMALL, TRAIN_NET
from training_checks import assert_trained


def _args(root, out):
    return ["--config-file", os.path.join(REPO, "configs/SyntheticReID/bagtricks_R18.yml"),
            "DATASETS.ROOT_DIR", str(root / "data"), "OUTPUT_DIR", str(out), "SOLVER.MAX_EPOCHS", "2",
            "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "2"] + SMALL


def _check(out):
    assert json.load(open(out / "results.json"))["SyntheticReID"]["mAP"] >= 0
    assert (out / "log.txt").is_file() and (out / "log.txt.rank1").is_file()
    main_log, rank1_log = open(out / "log.txt").read(), open(out / "log.txt.rank1").read()
    assert "Rank 0 of 2 processes" in main_log and "Rank 1 of 2 processes" in rank1_log
    # metrics are computed and printed once, on the main process
    assert main_log.count("Evaluation results") == 1 and "Evaluation results" not in rank1_log
    sd = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    # the gradients were reduced and applied: the loss (logged over both ranks) fell, weights moved
    assert_trained(str(out), modules=["backbone", "heads"])


def test_num_gpus_two_cpu_processes(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, TRAIN_NET, "--num-gpus", "2"] + _args(tmp_path, out), cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _check(out)


def test_under_torchrun(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        TRAIN_NET] + _args(tmp_path, out), cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _check(out)
