"""Train-loader throughput with and without DATALOADER.DECODE_CACHE, measured in one run.

Generates a SyntheticReID set of Market-1501 size (12,936 train JPEGs of 128x64) unless it
exists, then times full epochs of the PK train loader (256x128, batch 64, the reference
augmentations): epoch 1 without cache, epoch 0 with the cache (filling it) and epoch 1 with
the cache (reading it). Prints images/s and the speedup ratio (timings on shared machines are
noisy; compare ratios from the same run).

    python benchmarks/loader_throughput.py --workers 2 [--num-images 3000] [--cache ram|mmap]
"""

import argparse
import os
import tempfile
import time

from clipreid_plugin.config import get_cfg
from clipreid_plugin.data import build_reid_train_loader


def _epoch_rate(loader, epoch: int) -> float:
    loader.set_epoch(epoch)
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += batch["images"].shape[0]
    return n / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-images", type=int, default=12936, help="train images to generate")
    ap.add_argument("--workers", type=int, default=2, help="DATALOADER.NUM_WORKERS")
    ap.add_argument("--cache", default="ram", choices=["ram", "mmap"], help="decode cache storage")
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "clipreid_loader_bench"),
                    help="DATASETS.ROOT_DIR (the synthetic set is generated here once)")
    args = ap.parse_args()

    cfg = get_cfg()
    per_id = 17  # Market-1501 has 17.2 train images per identity
    cfg.DATASETS.ROOT_DIR = os.path.join(args.root, f"n{args.num_images}")
    cfg.DATASETS.NAMES = ("SyntheticReID",)
    cfg.DATASETS.SYNTHETIC.NUM_TRAIN_IDS = max(16, args.num_images // per_id)
    cfg.DATASETS.SYNTHETIC.IMAGES_PER_ID = per_id
    cfg.DATASETS.SYNTHETIC.NUM_TEST_IDS = 10
    cfg.DATASETS.SYNTHETIC.NUM_CAMERAS = 6
    cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.DATALOADER.PERSISTENT_WORKERS = True
    cfg.OUTPUT_DIR = os.path.join(args.root, "output")
    t0 = time.perf_counter()
    plain = build_reid_train_loader(cfg)
    print(f"dataset ready: {len(plain.dataset)} train images ({time.perf_counter() - t0:.1f} s incl. "
          f"generation if it was absent); input {cfg.INPUT.SIZE_TRAIN}, batch {cfg.SOLVER.IMS_PER_BATCH}, "
          f"{args.workers} workers")
    _epoch_rate(plain, 0)  # warm-up: page cache, worker start
    no_cache = _epoch_rate(plain, 1)
    del plain
    cfg.DATALOADER.DECODE_CACHE = args.cache
    cached = build_reid_train_loader(cfg)
    filling = _epoch_rate(cached, 0)
    warm = _epoch_rate(cached, 1)
    print(f"no cache          : {no_cache:8.1f} images/s")
    print(f"cache '{args.cache}', filling: {filling:8.1f} images/s")
    print(f"cache '{args.cache}', filled : {warm:8.1f} images/s")
    print(f"speedup (filled cache / no cache): {warm / no_cache:.2f}x")


if __name__ == "__main__":
    main()
