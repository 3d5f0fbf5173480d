"""ReidEvaluator gathers shards from every process (2 CPU processes, gloo)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from parity_harness.reference_eval import reference_eval_func

from eval_toy_data import normalised_squared_distances, toy_eval_set


def _worker(rank, world, init_file, data_path, out_dir):
    """One process: its contiguous shard of the evaluation set into a ReidEvaluator, metrics saved."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        from clipreid_plugin.config import get_cfg
        from clipreid_plugin.evaluation import ReidEvaluator

        data = torch.load(data_path, weights_only=True)["inputs"]
        n = data["feats"].shape[0]
        lo, hi = rank * n // world, (rank + 1) * n // world  # contiguous shards, like InferenceSampler
        ev = ReidEvaluator(get_cfg(), num_query=data["num_query"], dataset_name="toy")
        for s in range(lo, hi, 32):
            e = min(s + 32, hi)
            ev.process({"targets": data["pids"][s:e], "camids": data["camids"][s:e]}, data["feats"][s:e])
        torch.save(dict(ev.evaluate()), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_gather_across_processes(tmp_path):
    """Two processes, each processing a contiguous half: rank 0 evaluates the gathered whole
    (the reference protocol's mAP and rank-1 on the full set), the other rank returns nothing."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    data = toy_eval_set()
    data_path = str(tmp_path / "eval_set.pt")
    torch.save({"inputs": data}, data_path)
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), data_path, str(tmp_path)), nprocs=2, join=True)
    main, other = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    nq, pids, camids = data["num_query"], data["pids"].numpy(), data["camids"].numpy()
    cmc, m_ap = reference_eval_func(normalised_squared_distances(data["feats"], nq), pids[:nq], pids[nq:],
                                    camids[:nq], camids[nq:])
    assert other == {}
    assert abs(main["mAP"] - 100 * m_ap) <= 1e-4
    assert abs(main["Rank-1"] - 100 * float(cmc[0])) <= 1e-4
    assert main["num_valid_query"] == 48
