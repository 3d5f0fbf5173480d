"""Training loop: hook order, atomic checkpoints, exact resume after an interruption."""

import json
import os

import pytest
import torch

from clipreid_plugin.engine import HookBase, TrainerBase
from clipreid_plugin.utils.checkpoint import Checkpointer, CheckpointError, load_model_weights
from clipreid_plugin.utils.file_io import atomic_write

from toy_engine import ToyLoader, ToyTrainer, toy_cfg
from training_checks import assert_weights_moved


class _Recorder(HookBase):
    def __init__(self, log):
        self.log = log

    def before_train(self):
        self.log.append("before_train")

    def after_train(self):
        self.log.append("after_train")

    def before_epoch(self):
        self.log.append(f"before_epoch{self.trainer.epoch}")

    def after_epoch(self):
        self.log.append(f"after_epoch{self.trainer.epoch}")

    def before_step(self):
        self.log.append(f"before_step{self.trainer.iter}")

    def after_step(self):
        self.log.append(f"after_step{self.trainer.iter}")


class _CountingTrainer(TrainerBase):
    def __init__(self, log):
        super().__init__()
        self.data_loader = ToyLoader(iters=2)
        self.log = log

    def run_step(self, batch):
        self.log.append(f"step{self.iter}")


def test_hooks_run_in_documented_order():
    log = []
    t = _CountingTrainer(log)
    t.register_hooks([_Recorder(log), None])
    t.train(start_epoch=1, max_epochs=3)
    assert log == [
        "before_train",
        "before_epoch1", "before_step2", "step2", "after_step2", "before_step3", "step3", "after_step3", "after_epoch1",
        "before_epoch2", "before_step4", "step4", "after_step4", "before_step5", "step5", "after_step5", "after_epoch2",
        "after_train",
    ]


def test_after_train_runs_even_when_a_step_fails():
    log = []

    class Boom(_CountingTrainer):
        def run_step(self, batch):
            raise RuntimeError("boom")

    t = Boom(log)
    t.register_hooks([_Recorder(log)])
    with pytest.raises(RuntimeError, match="boom"):
        t.train(0, 1)
    assert log[-1] == "after_train"


def test_atomic_write_keeps_previous_file_when_writer_dies(tmp_path):
    path = tmp_path / "model_final.pth"
    torch.save({"w": torch.ones(3)}, path)

    def dies_midway(f):
        f.write(b"partial bytes of a new checkpoint")
        raise KeyboardInterrupt("killed during save")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), dies_midway)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["model_final.pth"]  # no temp file left behind


def _final_weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_resume_after_interruption_reaches_identical_weights_and_metrics(tmp_path):
    # uninterrupted reference run
    ref = ToyTrainer(toy_cfg(tmp_path / "ref"))
    ref.resume_or_load(resume=True)
    initial = _final_weights(ref)
    ref_results = ref.train()
    ref_w = _final_weights(ref)
    # it trained (the toy's labels are random, so its loss need not fall): equal weights below mean
    # the resumed run repeated the training, not that neither moved
    assert_weights_moved(initial, ref_w, modules=["fc"])

    # same run, killed in the middle of epoch 3 (after the epoch-2 checkpoint)
    class Killer(HookBase):
        def after_step(self):
            if self.trainer.iter == 7:  # epoch index 2, second step
                raise KeyboardInterrupt("simulated kill")

    run_dir = tmp_path / "run"
    t = ToyTrainer(toy_cfg(run_dir))
    t.register_hooks([Killer()])
    t.resume_or_load(resume=True)
    with pytest.raises(KeyboardInterrupt):
        t.train()
    assert open(run_dir / "last_checkpoint").read().strip() == "model_0002.pth"

    resumed = ToyTrainer(toy_cfg(run_dir))
    resumed.resume_or_load(resume=True)
    assert resumed.start_epoch == 2
    results = resumed.train()
    for k, v in ref_w.items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert results == ref_results
    # the optimizer's LR continued the schedule (0.1 * 0.5**4 at the last epoch)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 4)
    assert os.path.isfile(run_dir / "model_final.pth")


def test_metrics_json_and_config_written(tmp_path):
    t = ToyTrainer(toy_cfg(tmp_path))
    t.resume_or_load(resume=False)
    t.train()
    lines = [json.loads(l) for l in open(tmp_path / "metrics.json")]
    assert any("loss_cls" in r for r in lines)
    assert any("Toy/weight_sum" in r for r in lines)
    assert any("lr" in r for r in lines)


def test_load_weights_reports_missing_unexpected_and_mismatched(tmp_path, caplog):
    t = ToyTrainer(toy_cfg(tmp_path))
    sd = {"fc.weight": torch.zeros(5, 6), "fc.bias": torch.zeros(4), "extra.w": torch.ones(1)}
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    report = load_model_weights(t.model, str(path))
    assert report["unexpected"] == ["extra.w"]
    assert report["mismatched"] == ["fc.weight: (5, 6) in file vs (4, 6) in model"]
    assert torch.equal(t.model.fc.bias, torch.zeros(4))


def test_checkpoint_of_other_architecture_is_a_clear_error(tmp_path):
    t = ToyTrainer(toy_cfg(tmp_path))
    torch.save({"model": {"backbone.conv1.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="different architecture"):
        load_model_weights(t.model, str(tmp_path / "other.pth"))
    (tmp_path / "trunc.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="truncated"):
        load_model_weights(t.model, str(tmp_path / "trunc.pth"))


def test_checkpointer_without_checkpoint_resumes_nothing(tmp_path):
    c = Checkpointer(torch.nn.Linear(2, 2), str(tmp_path))
    assert not c.has_checkpoint() and c.resume() == {}


def test_atomic_write_gives_normal_file_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(str(tmp_path / "results.json"), lambda f: f.write(b"{}"))
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "results.json").st_mode & 0o777) == 0o644
