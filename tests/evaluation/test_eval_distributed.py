"""ReidEvaluator gathers shards from every process (2 CPU processes, gloo)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank, world, init_file, ref_path, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        from clipreid_plugin.config import get_cfg
        from clipreid_plugin.evaluation import ReidEvaluator

        refs = torch.load(ref_path, weights_only=True)["inputs"]
        n = refs["feats"].shape[0]
        lo, hi = rank * n // world, (rank + 1) * n // world  # contiguous shards, like InferenceSampler
        ev = ReidEvaluator(get_cfg(), refs["num_query"], "toy")
        for s in range(lo, hi, 32):
            e = min(s + 32, hi)
            ev.process({"targets": refs["pids"][s:e], "camids": refs["camids"][s:e]}, refs["feats"][s:e])
        torch.save(dict(ev.evaluate()), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_gather_across_processes(reference_dir, tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    ref_path = os.path.join(reference_dir, "eval_refs.pt")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), ref_path, str(tmp_path)), nprocs=2, join=True)
    main, other = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    out = torch.load(ref_path, weights_only=True)["outputs"]
    assert other == {}
    assert abs(main["mAP"] - 100 * out["r1map_mAP"]) <= 1e-4
    assert abs(main["Rank-1"] - 100 * float(out["r1map_cmc"][0])) <= 1e-4
    assert main["num_valid_query"] == 48
