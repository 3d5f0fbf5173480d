"""Training and extraction throughput of CLIP-ReID, reference-style vs ours, in one run.

For each model (random weights, built through the plugin from the Market-1501 configs) and each
of two settings, prints images/s of:

* ``stage2``: one stage-2 training step (forward, ID + triplet + image-to-text losses,
  backward, optimizer step) on batches already on the device;
* ``stage2+data``: the same step fed by the real train loader from a SyntheticReID JPEG folder
  (PK batches of 16 x 4, the reference's augmentations);
* ``stage1-features``: the stage-1 feature pass (``encode_image_for_stage1``, batch
  CLIPREID.STAGE1.IMS_PER_BATCH), as the stage-1 hook runs it;
* ``stage1-prompt``: one prompt-learning step (``stage1_losses`` + the stage-1 optimizer's step);
* ``extract``: evaluation feature extraction (eval-mode forward, TEST.IMS_PER_BATCH).

Settings (config keys in brackets):

* reference-style: eager, fp16 autocast with a GradScaler (SOLVER.AMP.DTYPE float16), a
  ``.item()`` on the loss after every step (the reference's meters), one parameter group per
  tensor (SOLVER.PARAM_GROUPS per_tensor), plain (for-loop) Adam (SOLVER.FUSED_OPTIMIZER off), the
  reference's loader (host augmentation, no decode cache, no pinned memory), fp32 extraction with
  batch 64;
* ours: --ours-dtype autocast (bfloat16 on a GPU, no scaler), fused Adam on merged groups,
  channels-last for the ResNet (MODEL.CHANNELS_LAST), torch.compile (MODEL.COMPILE), device-side
  augmentation with a decode cache and pinned uint8 batches (INPUT.DEVICE_AUGMENT,
  DATALOADER.DECODE_CACHE), losses read every SOLVER.LOG_PERIOD_ITERS steps (LossMonitor), and
  extraction in --ours-dtype with batch --extract-batch (TEST.PRECISION, TEST.IMS_PER_BATCH).

Models: ``vit16`` (CLIP ViT-B/16, 256x128, stride 16), ``vit12sie`` (stride 12 + SIE),
``rn50`` (CLIP RN50); ``--tiny`` uses the plugin's ReID-Tiny-ViT-16 / ReID-Tiny-RN at 64x32.

Backbones of the other methods (``--backbones``; :data:`BACKBONES`): part ``fwd+bwd``, the forward
and backward pass of the backbone alone (its map pooled and averaged as the loss), images/s, at the
full sizes also with ``--tiny`` (64x32, batch 2 then). reference-style = eager, fp16 autocast on a
GPU (fast-reid's shipped configs train with AMP; fp32 on a CPU), contiguous tensors; ours = channels-last,
--ours-dtype autocast, torch.compile (--compile-mode). Each backbone's row also gives its ``ours``
throughput relative to ``r50`` measured in the same run (the cost of IBN / non-local / ResNeSt).
Timings include no compilation (it happens in the warm-up steps). Ratios compare settings of
the same run; on shared machines compare ratios, not absolute numbers across runs.

    python benchmarks/train_throughput.py --device cuda
    python benchmarks/train_throughput.py --tiny --device cpu      # seconds; what CI runs
"""

import argparse
import itertools
import logging
import os
import sys
import tempfile
import time
import traceback
from typing import Dict, Iterator

# tools/ holds the process defaults every command line sets before torch loads
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from cli_defaults import set_cli_defaults  # noqa: E402

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import machine_line, rate, write_json  # noqa: E402

from clipreid_plugin.config import DataInfo, fill_data_dependent_keys, get_cfg, load_cfg  # noqa: E402
from clipreid_plugin.engine.trainer import maybe_compile  # noqa: E402
from clipreid_plugin.engine.train_loop import LossMonitor, OptimizationStep  # noqa: E402
from clipreid_plugin.modeling import build_backbone, build_model  # noqa: E402
from clipreid_plugin.solver import build_optimizer  # noqa: E402
from clipreid_plugin.utils.device import autocast, resolve_amp_dtype, resolve_device, resolve_dtype  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "projects", "CLIPReID", "configs", "market1501")
MODELS = {  # name: (config file, CLIP model, tiny CLIP model)
    "vit16": ("vit_clipreid.yml", "ViT-B-16", "ReID-Tiny-ViT-16"),
    "vit12sie": ("vit_clipreid_sie_olp.yml", "ViT-B-16", "ReID-Tiny-ViT-16"),
    "rn50": ("cnn_clipreid.yml", "RN50", "ReID-Tiny-RN"),
}
PARTS = ("stage2", "stage2+data", "stage1-features", "stage1-prompt", "extract")
# Backbones of the fast-reid / torchreid baselines: name -> MODEL.BACKBONE keys.
BACKBONES = {
    "r50": {"NAME": "build_resnet_backbone", "DEPTH": "50x"},                   # BoT R50
    "r50-ibn": {"NAME": "build_resnet_backbone", "DEPTH": "50x", "WITH_IBN": True},
    "r50-nl": {"NAME": "build_resnet_backbone", "DEPTH": "50x", "WITH_NL": True},  # AGW R50
    "r50-ibn-nl": {"NAME": "build_resnet_backbone", "DEPTH": "50x", "WITH_IBN": True, "WITH_NL": True},  # SBS
    "r101-ibn": {"NAME": "build_resnet_backbone", "DEPTH": "101x", "WITH_IBN": True},
    "s50": {"NAME": "build_resnest_backbone", "DEPTH": "50x"},                  # BoT S50
    "osnet": {"NAME": "build_osnet_backbone", "DEPTH": "x1_0"},                 # torchreid OSNet x1.0
    "osnet-ain": {"NAME": "build_osnet_backbone", "DEPTH": "x1_0", "WITH_AIN": True},
}
BACKBONE_PART = "fwd+bwd"
SETTINGS = ("reference-style", "ours")
NUM_INSTANCE = 4


def setting_cfg(args, model_name: str, setting: str, data_root: str):
    """The config of one model under one setting (random weights, SyntheticReID as training data)."""
    cfg_file, clip_name, tiny_name = MODELS[model_name]
    ours = setting == "ours"
    cnn = clip_name.startswith("RN")
    opts = [
        "MODEL.DEVICE", args.device,
        "MODEL.BACKBONE.PRETRAIN", "False",
        "CLIPREID.BACKBONE.MODEL_NAME", tiny_name if args.tiny else clip_name,
        "INPUT.SIZE_TRAIN", str(list(args.size)), "INPUT.SIZE_TEST", str(list(args.size)),
        "DATASETS.NAMES", "('SyntheticReID',)", "DATASETS.TESTS", "('SyntheticReID',)",
        "DATASETS.ROOT_DIR", data_root,
        "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", str(args.ids), "DATASETS.SYNTHETIC.IMAGES_PER_ID", str(NUM_INSTANCE),
        "DATASETS.SYNTHETIC.NUM_TEST_IDS", "4", "DATASETS.SYNTHETIC.NUM_CAMERAS", "6",
        "SOLVER.IMS_PER_BATCH", str(args.batch), "DATALOADER.NUM_INSTANCE", str(NUM_INSTANCE),
        "DATALOADER.NUM_WORKERS", str(args.workers), "DATALOADER.PERSISTENT_WORKERS", str(args.workers > 0),
        "SOLVER.AMP.ENABLED", str(not ours or args.ours_dtype != "float32"),
        "SOLVER.AMP.DTYPE", ("bfloat16" if args.ours_dtype == "float32" else args.ours_dtype) if ours else "float16",
        "SOLVER.PARAM_GROUPS", "merged" if ours else "per_tensor",
        "SOLVER.FUSED_OPTIMIZER", "auto" if ours else "off",
        "MODEL.CHANNELS_LAST", "on" if (ours and cnn) else "off",
        "MODEL.COMPILE", args.compile_mode if ours else "",
        "MODEL.COMPILE_BACKEND", args.compile_backend,
        "INPUT.DEVICE_AUGMENT", str(ours),
        "DATALOADER.DECODE_CACHE", "ram" if ours else "",
        "DATALOADER.PIN_MEMORY", str(ours),
        "TEST.PRECISION", args.ours_dtype if ours else "float32",
        "TEST.IMS_PER_BATCH", str(args.extract_batch if ours else 64),
        "OUTPUT_DIR", os.path.join(data_root, "output"),
    ]
    cfg = load_cfg(os.path.join(CONFIGS, cfg_file), opts)
    return fill_data_dependent_keys(cfg, DataInfo(args.ids, 6, 1, "person"))


def synthetic_batches(cfg, device) -> Iterator[Dict]:
    """Endless PK batches of random normalised images, already on the device."""
    g = torch.Generator().manual_seed(0)
    b, (h, w) = cfg.SOLVER.IMS_PER_BATCH, cfg.INPUT.SIZE_TRAIN
    p = b // NUM_INSTANCE
    pool = []
    for _ in range(4):
        ids = torch.randperm(cfg.MODEL.HEADS.NUM_CLASSES, generator=g)[:p].repeat_interleave(NUM_INSTANCE)
        pool.append({"images": torch.randn(b, 3, h, w, generator=g).to(device), "targets": ids.to(device),
                     "camids": torch.randint(0, 6, (b,), generator=g).to(device),
                     "viewids": torch.zeros(b, dtype=torch.int64, device=device)})
    return itertools.cycle(pool)


def loader_batches(loader) -> Iterator[Dict]:
    """Endless batches of the train loader, epoch after epoch."""
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


class Stage2Step:
    """One stage-2 training step as the trainer runs it (OptimizationStep), with the reference's
    per-step host sync or the LossMonitor's periodic one."""

    def __init__(self, model, optimizer, amp_dtype, device, sync_every_step: bool, batches: Iterator[Dict],
                 log_period: int):
        self.model, self.batches = model, batches
        self.step = OptimizationStep(optimizer, 0.0, amp_dtype, device.type)
        self.sync_every_step, self.log_period = sync_every_step, log_period
        self.monitor, self.i = LossMonitor(), 0

    def __call__(self) -> int:
        batch = next(self.batches)
        loss_dict, grad_norm = self.step(lambda: self.model(batch))
        if self.sync_every_step:
            sum(v for k, v in loss_dict.items() if k.startswith("loss")).item()
        else:
            self.monitor.update(loss_dict, grad_norm, self.i)
            if (self.i + 1) % self.log_period == 0:
                self.monitor.flush(self.i)
        self.i += 1
        return batch["images"].shape[0]


def run_setting(args, model_name: str, setting: str, data_root: str, device, results: Dict, deadline: float):
    """Measure every part of ``args.parts`` for one model and setting; errors become result rows."""
    cfg = setting_cfg(args, model_name, setting, data_root)
    sync_every_step = setting == "reference-style"
    torch.manual_seed(0)
    eager = build_model(cfg)
    eager.train()
    text = eager.text_head.text_features
    eager.set_text_features(0.1 * torch.randn(text.shape, generator=torch.Generator().manual_seed(1)).to(text))
    optimizer = build_optimizer(cfg, eager)
    model = maybe_compile(eager, cfg)
    amp_dtype = resolve_amp_dtype(cfg.SOLVER.AMP, device)
    log_period = cfg.SOLVER.LOG_PERIOD_ITERS

    def measure(part, fn, warmup=None):
        key = (model_name, part, setting)
        if part not in args.parts:
            return
        if time.perf_counter() > deadline:
            results[key] = "skipped (time budget)"
            return
        try:
            results[key] = rate(fn, device, args.warmup if warmup is None else warmup, args.steps)
        except Exception as e:  # one failing part must not hide the others
            traceback.print_exc()
            results[key] = f"FAIL: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        print(f"  {model_name:9s} {part:16s} {setting:16s} "
              + (f"{results[key]:9.1f} img/s" if isinstance(results[key], float) else results[key]), flush=True)

    measure("stage2", Stage2Step(model, optimizer, amp_dtype, device, sync_every_step,
                                 synthetic_batches(cfg, device), log_period))
    if "stage2+data" in args.parts and time.perf_counter() < deadline:
        from clipreid_plugin.data import build_reid_train_loader

        loader = build_reid_train_loader(cfg)
        if loader.num_classes != cfg.MODEL.HEADS.NUM_CLASSES:
            raise RuntimeError(f"synthetic set has {loader.num_classes} identities, the model {cfg.MODEL.HEADS.NUM_CLASSES}")
        # the warm-up covers one epoch, so that the decode cache is filled as in a real run's later epochs
        warm = max(args.warmup, len(loader)) if cfg.DATALOADER.DECODE_CACHE else args.warmup
        measure("stage2+data", Stage2Step(model, optimizer, amp_dtype, device, sync_every_step,
                                          loader_batches(loader), log_period), warmup=warm)
        del loader

    # stage 1, as the stage-1 hook runs it: the eager model, autocast in the training dtype
    s1_batch = cfg.CLIPREID.STAGE1.IMS_PER_BATCH
    g = torch.Generator().manual_seed(2)
    h, w = cfg.INPUT.SIZE_TEST
    s1_images = torch.randn(s1_batch, 3, h, w, generator=g).to(device)

    def features():
        with autocast(device.type, amp_dtype):
            eager.encode_image_for_stage1(s1_images)
        return s1_batch

    measure("stage1-features", features)

    from clipreid_plugin.plugins.clipreid.stage1 import build_stage1_optimizer

    with torch.no_grad(), autocast(device.type, amp_dtype):
        feats = eager.encode_image_for_stage1(s1_images).float()
    labels = torch.randint(0, cfg.MODEL.HEADS.NUM_CLASSES, (s1_batch,), generator=g).to(device)
    for p in eager.stage1_parameters():
        p.requires_grad_(True)
    # the stage-2 step's bookkeeping, another objective
    s1_step = Stage2Step(lambda batch: eager.stage1_losses(batch["f"], batch["l"]),
                         build_stage1_optimizer(cfg, eager), amp_dtype, device,
                         sync_every_step, itertools.repeat({"images": feats, "f": feats, "l": labels}),
                         log_period)
    measure("stage1-prompt", s1_step)
    for p in eager.stage1_parameters():
        p.requires_grad_(False)

    test_dtype = resolve_dtype(cfg.TEST.PRECISION, device, "TEST.PRECISION")
    eb = cfg.TEST.IMS_PER_BATCH
    ext = {"images": torch.randn(eb, 3, h, w, generator=g).to(device),
           "camids": torch.randint(0, 6, (eb,), generator=g).to(device),
           "viewids": torch.zeros(eb, dtype=torch.int64, device=device)}

    def extract():
        with torch.no_grad(), autocast(device.type, test_dtype):
            model(ext).float()
        return eb

    model.eval()
    measure("extract", extract)
    model.train()


def run_backbone(args, name: str, device, results: Dict, deadline: float) -> None:
    """Forward + backward images/s of one backbone of :data:`BACKBONES`, under each setting."""
    cfg = get_cfg()
    for k, v in BACKBONES[name].items():
        setattr(cfg.MODEL.BACKBONE, k, v)
    torch.manual_seed(0)
    backbone = build_backbone(cfg).to(device).train()
    b, (h, w) = args.backbone_batch, args.size
    images = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(3)).to(device)
    for setting in SETTINGS:
        key = (name, BACKBONE_PART, setting)
        if time.perf_counter() > deadline:
            results[key] = "skipped (time budget)"
            continue
        ours = setting == "ours"
        memory_format = torch.channels_last if ours else torch.contiguous_format
        backbone, x = backbone.to(memory_format=memory_format), images.contiguous(memory_format=memory_format)
        model = torch.compile(backbone, mode=args.compile_mode, backend=args.compile_backend) \
            if ours and args.compile_mode else backbone
        # fast-reid's shipped configs train with fp16 AMP (a GPU feature: fp32 on a CPU)
        dtype = resolve_dtype(args.ours_dtype if ours else "float16" if device.type == "cuda" else "float32",
                              device, "--ours-dtype")

        def step() -> int:
            backbone.zero_grad(set_to_none=True)
            with autocast(device.type, dtype):
                loss = model(x).feature.float().mean()
            loss.backward()
            return b

        try:
            results[key] = rate(step, device, args.warmup, args.steps)
        except Exception as e:  # one failing backbone must not hide the others
            traceback.print_exc()
            results[key] = f"FAIL: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        print(f"  {name:10s} {BACKBONE_PART:16s} {setting:16s} "
              + (f"{results[key]:9.1f} img/s" if isinstance(results[key], float) else results[key]), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vit16,vit12sie,rn50", help=f"comma list of: {', '.join(MODELS)}")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of: {', '.join(PARTS)}")
    ap.add_argument("--backbones", default=",".join(BACKBONES),
                    help=f"comma list of: {', '.join(BACKBONES)} ('' = none); forward+backward of the backbone alone")
    ap.add_argument("--backbone-batch", type=int, default=None, help="batch of the backbone rows (default 64; tiny 2)")
    ap.add_argument("--device", default="auto", help="auto / cuda / cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny CLIP models at 64x32, 16 identities (CPU smoke run)")
    ap.add_argument("--batch", type=int, default=None, help="stage-2 batch (default 64; tiny 16)")
    ap.add_argument("--extract-batch", type=int, default=None, help="ours' TEST.IMS_PER_BATCH (default 512; tiny 32)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per part (default 30; tiny 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first, compilation included (default 10; tiny 1)")
    ap.add_argument("--ids", type=int, default=None, help="training identities (default 751, Market-1501; tiny 16)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                    help="DATALOADER.NUM_WORKERS for stage2+data (the reference uses 8)")
    ap.add_argument("--ours-dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                    help="ours' autocast dtype (auto: bfloat16 on a GPU, float32 on a CPU, where bf16 autocast is slower)")
    ap.add_argument("--compile-mode", default="default", help="ours' MODEL.COMPILE ('' = eager)")
    ap.add_argument("--compile-backend", default="inductor", help="MODEL.COMPILE_BACKEND (aot_eager: fast to compile)")
    ap.add_argument("--time-budget", type=float, default=0, help="seconds; parts not started by then are skipped (0 = none)")
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "clipreid_train_bench"),
                    help="where the synthetic JPEG set is generated (once)")
    ap.add_argument("--json", default="", help="also write the results to this file")
    args = ap.parse_args(argv)
    tiny = args.tiny
    args.size = (64, 32) if tiny else (256, 128)
    args.batch = args.batch or (16 if tiny else 64)
    args.extract_batch = args.extract_batch or (32 if tiny else 512)
    args.steps = args.steps or (2 if tiny else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 10)
    args.ids = args.ids or (16 if tiny else 751)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    backbones = [m.strip() for m in args.backbones.split(",") if m.strip()]
    args.backbone_batch = args.backbone_batch or (2 if tiny else 64)
    for bad in [p for p in args.parts if p not in PARTS] + [m for m in models if m not in MODELS] + \
            [m for m in backbones if m not in BACKBONES]:
        ap.error(f"unknown part, model or backbone {bad!r}; parts: {', '.join(PARTS)}; models: {', '.join(MODELS)}; "
                 f"backbones: {', '.join(BACKBONES)}")
    device = resolve_device(args.device)
    args.device = str(device)
    if args.ours_dtype == "auto":
        args.ours_dtype = "bfloat16" if device.type == "cuda" else "float32"
    logging.getLogger("clipreid_plugin").setLevel(logging.WARNING)
    data_root = os.path.join(args.root, f"{'tiny' if tiny else 'full'}-{args.ids}ids")
    deadline = time.perf_counter() + args.time_budget if args.time_budget > 0 else float("inf")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    print(machine_line(args.device))
    print(f"models {', '.join(models)}; {args.size[0]}x{args.size[1]}; batch {args.batch}; {args.ids} identities; "
          f"{args.warmup} warm-up + {args.steps} timed steps per part; ours: {args.ours_dtype}, compile "
          f"{args.compile_mode or 'off'} ({args.compile_backend}), extraction batch {args.extract_batch}", flush=True)
    results: Dict = {}
    for model_name in models:
        for setting in SETTINGS:
            try:
                run_setting(args, model_name, setting, data_root, device, results, deadline)
            except Exception as e:
                traceback.print_exc()
                for part in args.parts:
                    results.setdefault((model_name, part, setting), f"FAIL: {type(e).__name__}: {str(e)[:120]}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if backbones:
        print(f"backbones {', '.join(backbones)}: forward + backward, batch {args.backbone_batch}", flush=True)
    for name in backbones:
        run_backbone(args, name, device, results, deadline)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    rows = []
    print(f"\n{'model':10s} {'part':16s} {'reference-style':>16s} {'ours':>12s} {'ratio':>7s}   (images/s)")
    for model_name in models:
        for part in args.parts:
            ref, ours = (results.get((model_name, part, s), "n/a") for s in SETTINGS)
            ok = isinstance(ref, float) and isinstance(ours, float)
            fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else "FAIL" if str(v).startswith("FAIL") else "n/a"  # noqa: E731
            ratio = f"{ours / ref:.2f}x" if ok else "-"
            print(f"{model_name:10s} {part:16s} {fmt(ref):>16s} {fmt(ours):>12s} {ratio:>7s}")
            rows.append({"model": model_name, "part": part, "reference_style": ref, "ours": ours,
                         "ratio": ours / ref if ok else None})
    base = results.get(("r50", BACKBONE_PART, "ours"))
    for name in backbones:
        ref, ours = (results.get((name, BACKBONE_PART, s), "n/a") for s in SETTINGS)
        ok = isinstance(ref, float) and isinstance(ours, float)
        fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else "FAIL" if str(v).startswith("FAIL") else "n/a"  # noqa: E731
        vs_r50 = f"   {ours / base:.2f}x of r50" if isinstance(base, float) and isinstance(ours, float) else ""
        print(f"{name:10s} {BACKBONE_PART:16s} {fmt(ref):>16s} {fmt(ours):>12s} "
              f"{(f'{ours / ref:.2f}x' if ok else '-'):>7s}{vs_r50}")
        rows.append({"model": name, "part": BACKBONE_PART, "reference_style": ref, "ours": ours,
                     "ratio": ours / ref if ok else None,
                     "ours_vs_r50": ours / base if isinstance(base, float) and isinstance(ours, float) else None})
    write_json(args.json, rows)
    failed = [r for r in rows if any(str(r[k]).startswith("FAIL") for k in ("reference_style", "ours"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
