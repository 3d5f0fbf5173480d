"""Two gloo processes on CPU train in lock-step and evaluate once."""

import datetime
import importlib
import logging
import os

import torch
import torch.distributed as dist

from clipreid_plugin.engine import launch
from clipreid_plugin.utils.logger import FILE_ONLY, setup_logger

from toy_engine import distributed_main

launch_module = importlib.import_module("clipreid_plugin.engine.launch")  # the package exports launch()


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


def test_c10d_noise_while_waiting_for_a_store_is_kept_for_the_log_file(tmp_path, capfd):
    """A restarted torchrun worker polls the new attempt's store; every failed try of c10d's
    TCPStore prints a C++ trace on file descriptor 2. Captured: nothing on the console, the text
    kept for the log file; a try that finally fails gives its diagnostics back to the console."""
    port = launch_module.find_free_port()  # nobody listens there
    with launch_module._stderr_captured("c10d while waiting"):
        try:
            dist.TCPStore("127.0.0.1", port, 2, is_master=False, timeout=datetime.timedelta(seconds=1))
        except RuntimeError:
            pass
    assert capfd.readouterr().err == ""
    (kept,) = launch_module.take_captured_output()
    assert kept.startswith("c10d while waiting:\n") and str(port) in kept
    logger = setup_logger(str(tmp_path))
    logger.info(kept, extra=FILE_ONLY)  # what default_setup does once the log file is open
    assert str(port) in (tmp_path / "log.txt").read_text() and str(port) not in capfd.readouterr().out
    logging.getLogger("clipreid_plugin").handlers.clear()

    try:
        with launch_module._stderr_captured("c10d"):
            os.write(2, b"the last try failed\n")
            raise RuntimeError("gave up")
    except RuntimeError:
        pass
    assert "the last try failed" in capfd.readouterr().err and not launch_module.take_captured_output()
