"""Train-loader throughput, reference-style vs ours, measured in one run.

Generates a SyntheticReID set (128x64 JPEGs, Market-1501's size; 12,936 train images by
default) unless it exists, then measures:

1. Each stage of a sample's path alone, on one core (the main process, one torch thread):
   JPEG decode (PIL), resize to the training size (PIL bicubic), the host augmentation
   (flip, pad + crop, normalisation, random erasing), the worker's share of the device path
   (the random draws only), collation, and the device step (flip, crop, normalisation and
   erasing of whole batches on --device).
2. Whole epochs of the PK train loader with --workers worker processes, each batch delivered on
   --device (copied there; augmented there for the device path):
   * reference-style: PIL decode + resize + host augmentation in the workers, float32 batches,
     no pinned memory (the reference's loader, 8 workers there; scale --workers to your cores);
   * cache only: DATALOADER.DECODE_CACHE ram (filled during a warm-up epoch), host augmentation;
   * device augment only: INPUT.DEVICE_AUGMENT, decoding every epoch;
   * ours: decode cache + device augmentation + pinned uint8 batches.
   Rates are given per worker ("per core"). Ratios compare configurations of the same run
   (timings on shared machines are noisy; compare ratios, not absolute numbers across runs).

    python benchmarks/loader_throughput.py --workers 8 --device cuda
    python benchmarks/loader_throughput.py --num-images 2000 --workers 2 --device cpu
"""

import argparse
import os
import random
import sys
import tempfile
import time

# tools/ holds the process defaults every command line sets before torch loads
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from cli_defaults import set_cli_defaults  # noqa: E402

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import machine_line, sync, write_json  # noqa: E402

from clipreid_plugin.config import get_cfg  # noqa: E402
from clipreid_plugin.data import build_reid_train_loader, build_train_samples, build_transforms  # noqa: E402
from clipreid_plugin.data.decode import read_image
from clipreid_plugin.data.image_dataset import ReIDImageDataset, collate_batch  # noqa: E402
from clipreid_plugin.data.device_augment import DeviceTransform  # noqa: E402
from clipreid_plugin.utils.device import resolve_device  # noqa: E402

CONFIGS = (  # name, DECODE_CACHE, DEVICE_AUGMENT, PIN_MEMORY
    ("reference-style", "", False, False),
    ("cache only", "ram", False, True),
    ("device augment only", "", True, True),
    ("ours", "ram", True, True),
)


def make_cfg(args) -> "object":
    cfg = get_cfg()
    per_id = 17  # Market-1501 has 17.2 train images per identity
    cfg.DATASETS.ROOT_DIR = os.path.join(args.root, f"n{args.num_images}")
    cfg.DATASETS.NAMES = ("SyntheticReID",)
    cfg.DATASETS.SYNTHETIC.NUM_TRAIN_IDS = max(16, args.num_images // per_id)
    cfg.DATASETS.SYNTHETIC.IMAGES_PER_ID = per_id
    cfg.DATASETS.SYNTHETIC.NUM_TEST_IDS = 10
    cfg.DATASETS.SYNTHETIC.NUM_CAMERAS = 6
    cfg.INPUT.SIZE_TRAIN = list(args.size)
    cfg.INPUT.SIZE_TEST = list(args.size)
    cfg.INPUT.PADDING.SIZE = max(1, round(10 * args.size[0] / 256))
    cfg.SOLVER.IMS_PER_BATCH = args.batch
    cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.DATALOADER.PERSISTENT_WORKERS = args.workers > 0
    cfg.MODEL.DEVICE = args.device
    cfg.OUTPUT_DIR = os.path.join(args.root, "output")
    return cfg


def stage_rates(cfg, paths, device) -> dict:
    """Images/s of each stage alone, on one core."""
    torch.set_num_threads(1)
    tf = build_transforms(cfg, is_train=True)
    n = len(paths)

    def timed(fn):
        start = time.perf_counter()
        out = [fn(i) for i in range(n)]
        return n / (time.perf_counter() - start), out

    res = {}
    res["decode (PIL)"], images = timed(lambda i: read_image(paths[i]))
    res["resize (PIL bicubic)"], arrays = timed(lambda i: tf.prepare(images[i]))
    res["host augmentation"], host = timed(lambda i: tf.augment(arrays[i], random.Random(i),
                                                                torch.Generator().manual_seed(i)))

    class _Served:  # serves the resized arrays, as a filled decode cache does
        def get(self, index, produce):
            return np.array(arrays[index])

    samples = [(p, 0, 0, 0) for p in paths]
    host_ds = ReIDImageDataset(samples, tf, _Served())
    dev_ds = ReIDImageDataset(samples, tf, _Served(), device_augment=True)
    res["worker, host path (cache filled)"], host_items = timed(lambda i: host_ds[(i, i)])
    res["worker, device path (cache filled)"], dev_items = timed(lambda i: dev_ds[(i, i)])
    bs = cfg.SOLVER.IMS_PER_BATCH
    chunks = lambda items: [items[i:i + bs] for i in range(0, n, bs)]  # noqa: E731
    start = time.perf_counter()
    for c in chunks(host_items):
        collate_batch(c)
    res["collate float32"] = n / (time.perf_counter() - start)
    start = time.perf_counter()
    dev_batches = [collate_batch(c) for c in chunks(dev_items)]
    res["collate uint8"] = n / (time.perf_counter() - start)
    step = DeviceTransform(tf, device)
    step(dev_batches[0])  # warm-up
    sync(device)
    start = time.perf_counter()
    for b in dev_batches:
        step(b)
    sync(device)
    res[f"device step on {device}"] = n / (time.perf_counter() - start)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return res


def epoch_rate(loader, epoch: int, device) -> float:
    """Images/s of one epoch, every batch delivered on ``device``."""
    loader.set_epoch(epoch)
    sync(device)
    start, n = time.perf_counter(), 0
    for batch in loader:
        images = batch["images"].to(device, non_blocking=True)
        n += images.shape[0]
    sync(device)
    return n / (time.perf_counter() - start)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-images", type=int, default=12936, help="train images to generate")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                    help="DATALOADER.NUM_WORKERS (the reference uses 8; default: min(8, cores))")
    ap.add_argument("--device", default="auto", help="where batches go and the device path augments (auto/cpu/cuda)")
    ap.add_argument("--size", type=int, nargs=2, default=[256, 128], metavar=("H", "W"), help="INPUT.SIZE_TRAIN")
    ap.add_argument("--batch", type=int, default=64, help="SOLVER.IMS_PER_BATCH")
    ap.add_argument("--stage-images", type=int, default=500, help="images for the one-core stage timings")
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "clipreid_loader_bench"),
                    help="DATASETS.ROOT_DIR (the synthetic set is generated here once)")
    ap.add_argument("--json", default="", help="also write the results to this file")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    cfg = make_cfg(args)
    print(machine_line(str(device)), flush=True)
    t0 = time.perf_counter()
    samples, _ = build_train_samples(cfg)
    paths = [s[0] for s in samples][:args.stage_images]
    print(f"dataset: {len(samples)} train JPEGs ({time.perf_counter() - t0:.1f} s incl. generation if it "
          f"was absent); input {args.size[0]}x{args.size[1]}, batch {args.batch}, {args.workers} workers", flush=True)
    del samples

    rows = []
    stages = stage_rates(cfg, paths, device)
    print(f"\n1. one core, {len(paths)} images: images/s of each stage alone")
    for name, r in stages.items():
        print(f"   {name:38s} {r:9.0f}")
        rows.append({"part": "stage", "name": name, "images_per_s": r})
    ref_chain = 1 / (1 / stages["decode (PIL)"] + 1 / stages["resize (PIL bicubic)"]
                     + 1 / stages["host augmentation"] + 1 / stages["collate float32"])
    ours_chain = 1 / (1 / stages["worker, device path (cache filled)"] + 1 / stages["collate uint8"])
    share = {k: (1 / stages[k]) / (1 / ref_chain) for k in ("decode (PIL)", "resize (PIL bicubic)",
                                                            "host augmentation", "collate float32")}
    print("   reference-style worker chain (decode + resize + augment + collate): "
          f"{ref_chain:.0f} images/s per core; shares: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in share.items()))
    print(f"   ours, worker chain (cache read + draws + uint8 collate): {ours_chain:.0f} images/s per core "
          f"({ours_chain / ref_chain:.1f}x); the augmentation itself runs on {device} "
          f"({stages[f'device step on {device}']:.0f} images/s there)")
    rows.append({"part": "chain", "name": "reference-style", "images_per_s_per_core": ref_chain})
    rows.append({"part": "chain", "name": "ours", "images_per_s_per_core": ours_chain})

    print(f"\n2. train loader epochs, {args.workers} workers, batches delivered on {device}")
    rates = {}
    for name, cache, dev_aug, pin in CONFIGS:
        cfg.defrost()
        cfg.DATALOADER.DECODE_CACHE, cfg.INPUT.DEVICE_AUGMENT, cfg.DATALOADER.PIN_MEMORY = cache, dev_aug, pin
        loader = build_reid_train_loader(cfg)
        epoch_rate(loader, 0, device)  # warm-up: worker start, page cache, fills the decode cache
        rates[name] = epoch_rate(loader, 1, device)
        del loader
        per = rates[name] / max(1, args.workers)
        print(f"   {name:22s} {rates[name]:8.0f} images/s  ({per:6.0f} per worker)", flush=True)
        rows.append({"part": "loader", "name": name, "workers": args.workers, "images_per_s": rates[name],
                     "images_per_s_per_worker": per})
    ref = rates["reference-style"]
    print("   ratios to reference-style: " + ", ".join(f"{k} {v / ref:.2f}x" for k, v in rates.items()
                                                       if k != "reference-style"))
    write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
