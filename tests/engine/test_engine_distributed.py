"""Two gloo processes on CPU train in lock-step and evaluate once."""

import os

import torch

from clipreid_plugin.engine import launch

from toy_engine import distributed_main


def test_two_gloo_processes_train_in_sync(tmp_path):
    launch(distributed_main, num_gpus_per_machine=2, dist_url="auto", args=(str(tmp_path),))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    for k in r0["weights"]:
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k
    # the weights moved away from the (shared) initialisation
    torch.manual_seed(0)
    init = torch.nn.Linear(6, 4)
    assert not torch.equal(init.weight, r0["weights"]["fc.weight"])
    # evaluation ran once (after the last epoch) on each rank, results only on the main one
    assert open(tmp_path / "eval_rank0.txt").read() == "eval\n"
    assert open(tmp_path / "eval_rank1.txt").read() == "eval\n"
    assert r0["results"] and not r1["results"]
    assert os.path.isfile(tmp_path / "log.txt") and os.path.isfile(tmp_path / "log.txt.rank1")
