"""A run's folder is never silently lost, mixed or left half-done; checkpoints are self-contained;
config mistakes stop a run before it trains. Driven through tools/train_net.py's command line
(in-process, same code path as the script) where a user meets them; kills in a subprocess."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import train_net  # tools/train_net.py (tools/ is on the test path)
from clipreid_plugin.config import load_cfg
from clipreid_plugin.engine import validate_config
from clipreid_plugin.utils.checkpoint import Checkpointer
from disk_full import full_disk
from training_checks import assert_trained

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "SyntheticReID", "bagtricks_R18.yml")
FAULT_PLUGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_plugin.py")
TINY = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "6", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "4",
        "DATASETS.SYNTHETIC.IMAGES_PER_ID", "4", "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "2",
        "DATASETS.SYNTHETIC.NUM_JUNK", "1", "DATASETS.SYNTHETIC.SIZE", "[32, 16]",
        "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "INPUT.PADDING.SIZE", "2",
        "SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_INSTANCE", "2", "DATALOADER.NUM_WORKERS", "0",
        "TEST.IMS_PER_BATCH", "16", "MODEL.DEVICE", "cpu", "SOLVER.WARMUP_EPOCHS", "1",
        "SOLVER.STEPS_EPOCHS", "[2]", "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.CHECKPOINT_MAX_KEEP", "0",
        "TEST.EVAL_PERIOD", "0", "SOLVER.MAX_EPOCHS", "3"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("run_safety_data"))


def train(out, data_root, *extra, config=CONFIG):
    """tools/train_net.py with the tiny settings; returns its exit code."""
    args = ([] if config is None else ["--config-file", config]) + TINY + \
        ["DATASETS.ROOT_DIR", data_root, "OUTPUT_DIR", str(out)] + [str(x) for x in extra]
    return train_net.cli(args)


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_root):
    """A finished 3-epoch run with a checkpoint after every epoch (model_0001, model_0002, model_final)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train(out, data_root) == 0
    assert_trained(str(out), modules=["backbone", "heads"])  # else equal weights after a resume prove nothing
    return out


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns(".run.lock"))
    return dst


# ----------------------------------------------------------------------------------------- one run per folder
def test_a_second_run_never_replaces_a_finished_one(finished_run, data_root, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    before = {name: _digest(run / name) for name in ("model_final.pth", "config.yaml", "metrics.json")}
    assert train(run, data_root, "SOLVER.MAX_EPOCHS", 2, "SOLVER.BASE_LR", 5e-4) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err and "--fresh-subdir" in err
    assert {name: _digest(run / name) for name in before} == before  # nothing touched

    assert train(run, data_root, "SOLVER.MAX_EPOCHS", 2, "--fresh-subdir") == 0
    (sub,) = [p for p in run.iterdir() if p.is_dir()]
    assert (sub / "model_final.pth").is_file() and {name: _digest(run / name) for name in before} == before

    assert train(run, data_root, "SOLVER.MAX_EPOCHS", 2, "--overwrite") == 0
    assert not (run / "model_0002.pth").exists()  # the old run's files are gone, not mixed in
    assert "MAX_EPOCHS: 2" in (run / "config.yaml").read_text()
    records = [json.loads(line) for line in open(run / "metrics.json")]
    assert max(r["epoch"] for r in records) == 1  # only the new 2-epoch run's metrics


def test_a_folder_in_use_is_refused_and_a_stale_lock_taken_over(data_root, tmp_path, capsys):
    out = tmp_path / "locked"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom clipreid_plugin.engine.run_dir import RunLock\n"
                               f"RunLock({str(out)!r}).acquire()\nprint('locked', flush=True)\ntime.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    out.mkdir()
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert train(out, data_root, "SOLVER.MAX_EPOCHS", 1) == 2
        assert f"in use by process {holder.pid} on this host" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert train(out, data_root, "SOLVER.MAX_EPOCHS", 1) == 0  # the killed holder's lock is stale
    assert "Taking over the lock" in (out / "log.txt").read_text()


# ----------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("damage", ["pointer_missing", "pointer_dangling", "last_truncated"])
def test_resume_continues_from_the_newest_good_checkpoint(finished_run, data_root, tmp_path, damage):
    run = _copy(finished_run, tmp_path)
    (run / "results.json").unlink()
    (run / "evaluations.json").unlink()
    if damage == "pointer_missing":
        (run / "last_checkpoint").unlink()
        (run / "model_final.pth").unlink()
    elif damage == "pointer_dangling":
        (run / "last_checkpoint").write_text("model_0009.pth")
        (run / "model_final.pth").unlink()
    else:
        data = (run / "model_final.pth").read_bytes()
        (run / "model_final.pth").write_bytes(data[: len(data) // 2])
    assert train(run, data_root, "--resume") == 0
    log = (run / "log.txt").read_text()
    assert "resuming from the newest readable checkpoint, model_0002.pth" in log
    why = {"pointer_missing": "last_checkpoint is missing:", "pointer_dangling": "last_checkpoint names "
           "model_0009.pth, which does not exist:", "last_truncated": "last_checkpoint names model_final.pth, "
           "which cannot be read:"}[damage]
    assert why in log and "is names" not in log
    assert "2 of 3 epochs done" in log
    # the third epoch again, from the second epoch's state: the very same final weights
    assert _equal(_weights(run / "model_final.pth"), _weights(finished_run / "model_final.pth"))


def test_resume_of_a_finished_run_says_so_and_restores_missing_results(finished_run, data_root, tmp_path):
    run = _copy(finished_run, tmp_path)
    results = json.load(open(run / "results.json"))
    assert train(run, data_root, "--resume") == 0
    assert "The main loop is already complete (3 of 3 epochs done)" in (run / "log.txt").read_text()
    assert json.load(open(run / "results.json")) == results
    (run / "results.json").unlink()
    assert train(run, data_root, "--resume") == 0  # the recorded final evaluation is written again
    assert json.load(open(run / "results.json")) == results


def test_a_failed_resume_leaves_the_run_config_alone(finished_run, data_root, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    config = (run / "config.yaml").read_text()
    assert train(run, data_root, "MODEL.BACKBONE.DEPTH", "34x", "--resume") == 2
    err = capsys.readouterr().err
    assert "Cannot resume from" in err and "different model" in err and "Traceback" not in err
    assert (run / "config.yaml").read_text() == config and "DEPTH: 18x" in config
    # the keys are summarised (counts, a few per module), not listed one by one (was 3,031 characters)
    # ResNet-34 has 1, 2, 4 and 1 more BasicBlocks than ResNet-18 in layer1-4; 12 tensors each
    # (2 convolutions, 2 batch norms of 5 entries)
    line = err.strip().splitlines()[0]
    assert len(line) < 800 and ("missing 96 keys in 4 modules: backbone.layer1 (12: 2.conv1.weight, 2.bn1.weight, "
                                "...); backbone.layer2 (24: 2.conv1.weight, 2.bn1.weight, ...); backbone.layer3 (48: "
                                "2.conv1.weight, 2.bn1.weight, ...); and 1 more module)") in line


def test_leftovers_of_a_killed_write_are_removed(finished_run, data_root, tmp_path):
    run = _copy(finished_run, tmp_path)
    (run / "model_0004.pth.x81k2.tmp").write_bytes(b"partial")
    assert train(run, data_root, "--resume") == 0
    assert not list(run.glob("*.tmp"))


def _subprocess_train(out, data_root, *extra, env=None):
    args = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", CONFIG] + TINY + \
        ["DATASETS.ROOT_DIR", data_root, "OUTPUT_DIR", str(out), "PLUGINS", f"['{FAULT_PLUGIN}']",
         "TEST.EVALUATOR", "KillingReidEvaluator"] + [str(x) for x in extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONWARNINGS="ignore", **(env or {})))


def test_a_kill_during_an_evaluation_is_redone_on_resume(data_root, tmp_path):
    """Killed (SIGKILL) during the epoch-2 evaluation, then during the final one: each --resume
    redoes the evaluation that did not finish and the run ends with its results."""
    out = tmp_path / "run"
    fault = {"FAULT_MARKER": str(tmp_path / "killed_mid"), "FAULT_EVAL": "2"}
    p = _subprocess_train(out, data_root, "TEST.EVAL_PERIOD", 1, env=fault)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert (out / "model_0002.pth").is_file() and set(json.load(open(out / "evaluations.json"))) == {"1"}

    fault = {"FAULT_MARKER": str(tmp_path / "killed_final"), "FAULT_EVAL": "2"}  # the redone epoch-2 one, then this
    p = _subprocess_train(out, data_root, "TEST.EVAL_PERIOD", 1, "--resume", env=fault)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    log = (out / "log.txt").read_text()
    assert "The evaluation after epoch 2 had not finished when the run stopped: evaluating now." in log
    assert (out / "model_final.pth").is_file() and not (out / "results.json").exists()

    p = _subprocess_train(out, data_root, "TEST.EVAL_PERIOD", 1, "--resume")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "The evaluation after epoch 3 had not finished" in (out / "log.txt").read_text()
    assert set(json.load(open(out / "evaluations.json"))) == {"1", "2", "3"}
    assert set(json.load(open(out / "results.json"))) == {"SyntheticReID"}


# ----------------------------------------------------------------------------------------- silent no-ops
@pytest.mark.parametrize("extra, message", [
    (["SOLVER.MAX_EPOCHS", 0], "Nothing to train: SOLVER.MAX_EPOCHS is 0"),
    (["SOLVER.MAX_EPOCHS", -3], "SOLVER.MAX_EPOCHS is -3; it must be >= 0"),
    (["TEST.EVALUATOR", "Foo"], "TEST.EVALUATOR: No object named 'Foo' in the EVALUATOR registry"),
    (["TEST.METRIC", "cosin"], "TEST.METRIC is 'cosin'; valid: 'euclidean', 'cosine'"),
    (["DATASETS.TESTS", "('Foo',)"], "DATASETS.TESTS: No object named 'Foo' in the DATASET registry"),
    (["DATASETS.TESTS", "('Market1501',)"], "Market1501: dataset folder not found"),
    (["MODEL.HEADS.NECK_FEAT", "middle"], "MODEL.HEADS.NECK_FEAT is 'middle'; valid: 'before', 'after'"),
])
def test_config_mistakes_stop_before_training(data_root, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert train(out, data_root, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 2
    assert not list(out.glob("model_*.pth")) and not (out / "metrics.json").exists()


def test_the_prompt_phase_needs_positive_epochs(tmp_path, capsys):
    cfg = os.path.join(REPO, "projects", "CLIPReID", "configs", "synthetic", "cnn_clipreid_tiny.yml")
    assert train_net.cli(["--config-file", cfg, "CLIPREID.STAGE1.MAX_EPOCHS", "-2", "OUTPUT_DIR",
                          str(tmp_path / "o"), "DATASETS.ROOT_DIR", str(tmp_path / "d")]) == 2
    assert "CLIPREID.STAGE1.MAX_EPOCHS is -2; stage 1 needs at least one epoch" in capsys.readouterr().err


def test_schedules_that_do_not_fit_are_warned_and_workers_capped(caplog):
    cfg = load_cfg(CONFIG, ["SOLVER.MAX_EPOCHS", "4", "SOLVER.WARMUP_EPOCHS", "10", "SOLVER.STEPS_EPOCHS", "[2, 6]",
                            "DATALOADER.NUM_WORKERS", "512", "DATASETS.TESTS", "()",
                            "SOLVER.SCHED.NAME", "WarmupMultiStepLR"])
    checked = validate_config(cfg)
    assert "SOLVER.WARMUP_EPOCHS (10) is not shorter than SOLVER.MAX_EPOCHS (4)" in caplog.text
    assert "the step(s) at [6] fall at or after SOLVER.MAX_EPOCHS (4)" in caplog.text
    assert checked.DATALOADER.NUM_WORKERS == len(os.sched_getaffinity(0)) < 512
    # fast-reid's MultiStepLR counts from the first epoch end after a one-epoch warmup (the demo's): of
    # 4 epochs, steps 1..3 happen (after epochs 1, 2, 3), a step at 4 never does
    caplog.clear()
    validate_config(load_cfg(CONFIG, ["SOLVER.MAX_EPOCHS", "4", "SOLVER.STEPS_EPOCHS", "[3, 4]", "DATASETS.TESTS", "()"]))
    assert "the step(s) at [4], counted (as fast-reid counts them) from epoch 1 on, fall at or after" in caplog.text


# ----------------------------------------------------------------------------------------- divergence
def test_a_nan_loss_stops_in_one_line_and_the_folder_stays_free(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert train(out, data_root, "SOLVER.OPTIMIZER_NAME", "SGD", "SOLVER.BASE_LR", "1e30",
                 "SOLVER.WARMUP_EPOCHS", 0, "SOLVER.LOG_PERIOD_ITERS", 100) == 2
    err = capsys.readouterr().err
    assert "became infinite or NaN at iteration" in err and "Traceback" not in err
    iteration = int(err.split("at iteration ")[1].split(" ")[0].rstrip(")"))
    assert iteration < 3  # found at the step it happened, not at a later log line
    assert not list(out.glob("model_*.pth"))  # nothing diverged was saved
    # no checkpoint: the message does not claim one, and the same folder takes a new run
    assert "No checkpoint had been written" in err and "last good state" not in err
    log = (out / "log.txt").read_text()
    assert "Exception during training" not in log and "Traceback" not in log
    assert "error: The loss or the gradient norm became infinite or NaN" in log  # why it stopped, in the file
    assert train(out, data_root, "SOLVER.MAX_EPOCHS", 1) == 0


def test_an_exploding_loss_is_warned_then_stopped_keeping_the_last_good_checkpoint(data_root, tmp_path, capsys):
    """Adam at LR 1e6 explodes within the first logging period: judged against the loss of the
    first steps, it is warned and stopped. A LR multiplied by 1e9 after epoch 1 diverges in
    epoch 2: stopped with model_0001.pth kept and named."""
    out = tmp_path / "adam"
    assert train(out, data_root, "SOLVER.OPTIMIZER_NAME", "Adam", "SOLVER.BASE_LR", "1e6", "SOLVER.WARMUP_EPOCHS", 0,
                 "SOLVER.LOG_PERIOD_ITERS", 20) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "its smallest value in the first steps" in err and "Traceback" not in err
    assert "No checkpoint had been written" in err and not list(out.glob("model_*.pth"))

    out = tmp_path / "late"
    # fast-reid's MultiStepLR (the demo's): the first step, counted after epoch 1, multiplies the LR of epoch 2
    assert train(out, data_root, "SOLVER.WARMUP_EPOCHS", 0, "SOLVER.STEPS_EPOCHS", "[1]", "SOLVER.GAMMA", "1e9",
                 "SOLVER.LOG_PERIOD_ITERS", 1) == 2
    err = capsys.readouterr().err
    assert "The last good state is model_0001.pth" in err and "--resume" in err
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0001.pth"]
    log = (out / "log.txt").read_text()
    assert "training is probably diverging" in log or "training diverged" in log


# ----------------------------------------------------------------------------------------- loss logs
def test_a_resumed_run_logs_the_same_metrics_as_an_uninterrupted_one(finished_run, data_root, tmp_path):
    """The run is killed right after model_0002.pth: its metrics.json has the first two epochs'
    records. --resume appends the third epoch's: the file then equals the uninterrupted run's
    (losses are window means, not medians over a history a resumed process does not have)."""
    run = _copy(finished_run, tmp_path)
    for name in ("model_final.pth", "last_checkpoint", "results.json", "results.csv", "results.md",
                 "evaluations.json"):
        (run / name).unlink()
    records = [json.loads(line) for line in open(finished_run / "metrics.json")]
    (run / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records if r["epoch"] < 2))
    assert train(run, data_root, "--resume") == 0

    def comparable(path):  # wall-clock timings differ between any two runs
        return [{k: v for k, v in json.loads(line).items() if k not in ("time", "data_time")} for line in open(path)]

    assert comparable(run / "metrics.json") == comparable(finished_run / "metrics.json")
    assert sum(1 for r in records if "loss_cls" in r) == 3  # one window per epoch, each logged
    log = (finished_run / "log.txt").read_text()
    assert "(mean of iters 1-2)" in log  # the console names the window its losses average


# ----------------------------------------------------------------------------------------- self-contained checkpoints
def test_a_checkpoint_evaluates_alone_without_training_data(finished_run, data_root, tmp_path):
    weights = tmp_path / "model_final.pth"
    shutil.copy(finished_run / "model_final.pth", weights)
    test_only = tmp_path / "test_only"
    shutil.copytree(os.path.join(data_root, "SyntheticReID"), test_only / "SyntheticReID")
    shutil.rmtree(test_only / "SyntheticReID" / "bounding_box_train")
    out = tmp_path / "eval"
    # no --config-file: the checkpoint's stored config; a PK batch check would fail (8 ids > 6 ids)
    assert train_net.cli(["--eval-only", "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(out),
                          "DATASETS.ROOT_DIR", str(test_only), "SOLVER.IMS_PER_BATCH", "32"]) == 0
    assert json.load(open(out / "results.json")) == json.load(open(finished_run / "results.json"))
    # a run that names no plugin carries none of their keys, in its folder and in its checkpoint
    assert "CLIPREID" not in (finished_run / "config.yaml").read_text()
    assert "CLIPREID" not in (out / "config.yaml").read_text()


def test_weights_of_another_architecture_are_an_error(finished_run, data_root, tmp_path, capsys):
    assert train(tmp_path / "e", data_root, "--eval-only", "MODEL.WEIGHTS", finished_run / "model_final.pth",
                 "MODEL.BACKBONE.DEPTH", "34x") == 2
    err = capsys.readouterr().err
    # the toolkit's EmbeddingHead has fast-reid's names, so the fast-reid converter's architecture check
    # answers first, naming the key to set
    assert "another architecture than the config builds" in err and "set MODEL.BACKBONE.DEPTH" in err


def test_evaluation_inside_a_run_folder_goes_to_its_own_subfolder(finished_run, data_root, tmp_path):
    run = _copy(finished_run, tmp_path)
    before = _digest(run / "results.json")
    assert train(run, data_root, "--eval-only", "MODEL.WEIGHTS", run / "model_0002.pth") == 0
    assert (run / "eval_model_0002" / "results.json").is_file() and _digest(run / "results.json") == before


def test_eval_only_with_resume_evaluates_the_last_checkpoint_of_the_run(finished_run, data_root, tmp_path):
    """--eval-only --resume (what the "--eval-only needs weights" message suggests) evaluates the
    run's model_final.pth in its own sub-folder and reproduces the run's final results."""
    run = _copy(finished_run, tmp_path)
    before = _digest(run / "results.json")
    assert train(run, data_root, "--eval-only", "--resume") == 0
    assert json.load(open(run / "eval_model_final" / "results.json")) == json.load(open(run / "results.json"))
    assert _digest(run / "results.json") == before


# ----------------------------------------------------------------------------------------- messages
def test_unwritable_output_dir_is_one_line(data_root, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert train(tmp_path / "a_file" / "out", data_root) == 2
    err = capsys.readouterr().err
    assert "is not writable" in err and "Traceback" not in err


def test_disk_full_during_a_save_is_one_line_and_keeps_earlier_checkpoints(data_root, tmp_path, capsys, monkeypatch):
    full_disk(monkeypatch, after_files=1, only="model_*.pth", free_bytes=64)  # model_0002.pth does not fit
    out = tmp_path / "out"
    assert train(out, data_root) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == (f"error: Could not write checkpoint {out / 'model_0002.pth'}: No space left on device. The "
                      f"previous checkpoints in {out} are intact; free disk space (or fix permissions) and resume "
                      f"with --resume.")
    assert _weights(out / "model_0001.pth") and not list(out.glob("*.tmp"))


def test_disk_full_at_the_pointer_says_the_checkpoint_was_written(data_root, tmp_path, capsys, monkeypatch):
    full_disk(monkeypatch, after_files=0, only="last_checkpoint", free_bytes=4)  # model_0001.pth fits, its pointer not
    out = tmp_path / "out"
    assert train(out, data_root) == 2
    err = capsys.readouterr().err.strip().splitlines()[0]
    assert err.startswith(f"error: Wrote checkpoint {out / 'model_0001.pth'}, but not its pointer last_checkpoint: No "
                          f"space left on device.")
    assert _weights(out / "model_0001.pth") and not (out / "last_checkpoint").exists()


def test_disk_full_at_the_results_is_one_line(finished_run, data_root, tmp_path, capsys, monkeypatch):
    run = _copy(finished_run, tmp_path)
    (run / "results.json").unlink()
    full_disk(monkeypatch, after_files=0, only="results.json")
    assert train(run, data_root, "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: Could not write {run / 'results.json'}: No space left on device." and len(err) == 2


def test_flags_are_accepted_after_the_overrides(finished_run, data_root, tmp_path):
    run = _copy(finished_run, tmp_path)
    assert train(run, data_root, "SOLVER.MAX_EPOCHS", 3, "--resume") == 0


def test_an_unreadable_image_in_a_loader_worker_is_one_line(data_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(os.path.join(data_root, "SyntheticReID"), root / "SyntheticReID")
    bad = sorted((root / "SyntheticReID" / "bounding_box_train").iterdir())[0]
    bad.write_bytes(b"not a jpeg")
    assert train(tmp_path / "out", str(root), "DATALOADER.NUM_WORKERS", 1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: Cannot read image {bad}: cannot identify image file '{bad}'. Fix or remove the file, " \
                     f"or set DATASETS.SKIP_BAD_IMAGES True to skip unreadable images (they are counted and logged)."


def test_checkpoint_pruning_keeps_the_newest_of_each_family(tmp_path):
    c = Checkpointer(torch.nn.Linear(2, 2), str(tmp_path), max_keep=2)
    for name in ("model_stage1_0001", "model_stage1_0002", "model_stage1_0003", "model_stage1_final",
                 "model_0001", "model_0002", "model_0003", "model_0004", "model_final"):
        c.save(name)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == [
        "model_0003.pth", "model_0004.pth", "model_final.pth", "model_stage1_0002.pth", "model_stage1_0003.pth",
        "model_stage1_final.pth"]


def test_a_clip_checkpoint_evaluates_and_extracts_without_its_clip_file_or_training_data(tmp_path):
    """CLIP-ReID trained from an OpenAI-format CLIP file (architecture read from the file), then the
    file and the training images deleted: the checkpoint alone evaluates and embeds images."""
    import open_clip

    import importlib.util

    import extract as extract_tool  # tools/extract.py
    from clipreid_plugin.plugins.clipreid.clip_weights import register_toolkit_model_configs

    spec = importlib.util.spec_from_file_location("mini_trees", os.path.join(REPO, "tests", "projects", "mini_trees.py"))
    mini_trees = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mini_trees)

    register_toolkit_model_configs()
    clip_file = tmp_path / "tiny_clip_openai_layout.pt"
    torch.save(open_clip.create_model("ReID-Tiny-ViT-16").state_dict(), clip_file)  # OpenAI key layout
    data = mini_trees.make_veri(str(tmp_path / "data"))
    run = tmp_path / "run"
    cfg = os.path.join(REPO, "projects", "CLIPReID", "configs", "veri_vit.yml")
    assert train_net.cli(["--config-file", cfg, "MODEL.BACKBONE.PRETRAIN_PATH", str(clip_file),
                          "CLIPREID.BACKBONE.MODEL_NAME", "", "DATASETS.ROOT_DIR", data, "OUTPUT_DIR", str(run),
                          "INPUT.SIZE_TRAIN", "[32, 32]", "INPUT.SIZE_TEST", "[32, 32]", "SOLVER.MAX_EPOCHS", "1",
                          "SOLVER.IMS_PER_BATCH", "8", "TEST.IMS_PER_BATCH", "8", "CLIPREID.STAGE1.MAX_EPOCHS", "1",
                          "CLIPREID.STAGE1.IMS_PER_BATCH", "8", "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu",
                          "SOLVER.AMP.ENABLED", "False"]) == 0
    run_config = (run / "config.yaml").read_text()
    assert "CLIPREID:" in run_config and "clipreid_plugin.plugins.clipreid" in run_config  # keys and activation
    clip_file.unlink()
    shutil.rmtree(os.path.join(data, "VeRi", "image_train"))
    out = tmp_path / "eval"
    assert train_net.cli(["--eval-only", "MODEL.WEIGHTS", str(run / "model_final.pth"), "OUTPUT_DIR", str(out)]) == 0
    assert json.load(open(out / "results.json")) == json.load(open(run / "results.json"))

    feats = tmp_path / "feats.npz"
    assert run_tool_exit(extract_tool.main, ["--weights", str(run / "model_final.pth"), "--input",
                                             os.path.join(data, "VeRi", "image_query"), "--output", str(feats)]) == 0
    import numpy as np

    stored = np.load(feats)
    assert stored["feats"].shape == (4, 128 + 64) and np.isfinite(stored["feats"]).all()  # ViT width + embed dim


def run_tool_exit(main, argv):
    from clipreid_plugin.utils.cli import run_tool

    return run_tool(lambda: main(argv))


PLAIN_TENSOR_BACKBONE = '''
from torch import nn
from clipreid_plugin.modeling.backbones import BACKBONE_REGISTRY, Backbone


class PlainTensorCNN(Backbone):
    """Forgets the contract: returns the feature map itself, not a BackboneOutput."""

    def __init__(self):
        super().__init__()
        self.out_features = 8
        self.body = nn.Conv2d(3, 8, 3, 2, 1)

    def forward(self, images, camids=None, viewids=None):
        return self.body(images)


@BACKBONE_REGISTRY.register()
def build_plain_tensor_backbone(cfg):
    return PlainTensorCNN()
'''


def test_a_backbone_that_breaks_the_output_contract_is_named_when_the_model_is_built(data_root, tmp_path, capsys):
    plugin = tmp_path / "plain_backbone.py"
    plugin.write_text(PLAIN_TENSOR_BACKBONE)
    out = tmp_path / "out"
    assert train(out, data_root, "PLUGINS", f"['{plugin}']", "MODEL.BACKBONE.NAME", "build_plain_tensor_backbone") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == ("error: MODEL.BACKBONE.NAME 'build_plain_tensor_backbone': PlainTensorCNN.forward returned a "
                      "Tensor, not a BackboneOutput: every backbone returns BackboneOutput(feature, ...) "
                      "(clipreid_plugin/modeling/backbones/base.py).") and len(err) == 2
    assert "Starting the main loop" not in (out / "log.txt").read_text()  # found at build, before any step


def test_a_plugin_that_fails_to_import_is_one_sentence_and_one_debug_hint(data_root, tmp_path, capsys):
    plugin = tmp_path / "clash.py"
    plugin.write_text("from clipreid_plugin.modeling.backbones import BACKBONE_REGISTRY\n\n\n"
                      "@BACKBONE_REGISTRY.register()\ndef build_resnet_backbone(cfg):\n    return None\n")
    assert train(tmp_path / "out", data_root, "PLUGINS", f"['{plugin}']") == 2
    err = capsys.readouterr().err
    assert err.count("CLIPREID_DEBUG") == 1 and ".." not in err.splitlines()[0]
    assert err.splitlines()[0].endswith("Rename one of them.")
