"""tools/train_net.py end to end on a small SyntheticReID: a training run and --eval-only in a
subprocess (the command a user runs), argument and config errors in-process through cli()."""

import json
import os
import subprocess
import sys

import pytest

import train_net  # tools/train_net.py (tools/ is on the test path)
from training_checks import assert_trained

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
SMALL = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
         "DATASETS.SYNTHETIC.IMAGES_PER_ID", "4", "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4",
         "DATASETS.SYNTHETIC.NUM_JUNK", "2", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
         "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "SOLVER.IMS_PER_BATCH", "16",
         "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "32", "MODEL.DEVICE", "cpu"]


def run(args, cwd):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, TRAIN_NET] + args, cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    out = root / "out"
    p = run(["--config-file", os.path.join(REPO, "configs/SyntheticReID/bagtricks_R18.yml"),
             "DATASETS.ROOT_DIR", str(root / "data"), "OUTPUT_DIR", str(out), "SOLVER.MAX_EPOCHS", "2",
             "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "2"] + SMALL, cwd=root)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return root, out, p


def test_train_writes_config_checkpoints_metrics_and_results(trained_run):
    root, out, p = trained_run
    for name in ("config.yaml", "log.txt", "metrics.json", "model_final.pth", "last_checkpoint",
                 "results.json", "results.csv", "results.md"):
        assert (out / name).is_file(), name
    results = json.load(open(out / "results.json"))
    metrics = results["SyntheticReID"]
    assert 0.0 <= metrics["mAP"] <= 100.0 and 0.0 <= metrics["Rank-1"] <= 100.0
    assert "Rank-1" in p.stdout and "mAP" in p.stdout  # the results table was printed
    assert_trained(str(out), modules=["backbone", "heads"])


def test_eval_only_reproduces_the_final_evaluation(trained_run):
    root, out, _ = trained_run
    ev = root / "eval"
    p = run(["--config-file", str(out / "config.yaml"), "--eval-only", "MODEL.WEIGHTS", str(out / "model_final.pth"),
             "OUTPUT_DIR", str(ev)], cwd=root)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    a = json.load(open(out / "results.json"))["SyntheticReID"]
    b = json.load(open(ev / "results.json"))["SyntheticReID"]
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-6) and a["Rank-1"] == pytest.approx(b["Rank-1"], abs=1e-6)


def test_config_typo_is_a_one_line_error(tmp_path, capsys):
    """In-process through cli(), the code path of the script: exit code 2, one line, no traceback."""
    code = train_net.cli(["--config-file", os.path.join(REPO, "configs/SyntheticReID/bagtricks_R18.yml"),
                          "SOLVER.BASE_LRR", "0.1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "SOLVER.BASE_LRR" in err and "SOLVER.BASE_LR" in err
    assert "Traceback" not in err


def test_missing_dataset_folder_shows_expected_layout(tmp_path, capsys):
    code = train_net.cli(["--config-file", os.path.join(REPO, "configs/SyntheticReID/bagtricks_R18.yml"),
                          "DATASETS.NAMES", "('Market1501',)", "DATASETS.TESTS", "('Market1501',)",
                          "DATASETS.ROOT_DIR", str(tmp_path / "nowhere"), "OUTPUT_DIR", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "bounding_box_train" in err and "Traceback" not in err


def test_help_explains_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_net.cli(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config-file", "--eval-only", "--resume", "--num-gpus", "--num-machines", "--machine-rank",
                 "--dist-url"):
        assert flag in out
