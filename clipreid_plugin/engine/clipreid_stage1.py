"""CLIP-ReID's first training phase as a trainer hook (spec 4.1, 4.3).

Before the engine's ordinary ReID loop (stage 2) starts, :class:`CLIPReIDStage1Hook`

1. caches the projected image feature of every training image once (test transform, no SIE,
   CLIP towers in eval mode, no gradient);
2. trains only the identity tokens ``cls_ctx`` of the prompt learner for
   ``CLIPREID.STAGE1.MAX_EPOCHS`` epochs on random batches of those cached features, with its
   own Adam and a warmup + cosine schedule stepped per epoch;
3. computes the text feature of every identity once and freezes it in the model, where the
   stage-2 image-to-text loss reads it.

Its progress (done or not, epochs finished, optimizer state) is part of every checkpoint,
so ``--resume`` during stage 1 continues the same epoch sequence, and a run interrupted in
stage 2 never repeats stage 1. The stage-1 tokens and text features live in the model's state
dict, so they are never lost.

Distributed runs: every process runs the identical stage 1 (same cached features, same seeded
batches), which keeps ``cls_ctx`` equal on all ranks without communication; stage 1 is cheap
next to stage 2.
"""

import logging
import math
from contextlib import nullcontext
from typing import Dict, List

import torch

from clipreid_plugin.solver import build_optimizer, warmup_cosine_lr
from clipreid_plugin.utils.checkpoint import unwrap_model
from clipreid_plugin.utils.env import resolve_amp_dtype
from clipreid_plugin.utils.logger import log_every_n_seconds

from .defaults import META_HOOK_BUILDERS
from .train_loop import HookBase

__all__ = ["CLIPReIDStage1Hook", "stage1_lr"]

logger = logging.getLogger(__name__)

PHASES = ("both", "stage1", "stage2")


def stage1_lr(cfg, epoch: int) -> float:
    """Learning rate of 1-based stage-1 epoch ``epoch`` (timm-style cosine, as the reference).

    Args:
        cfg: the config (``CLIPREID.STAGE1.{BASE_LR, WARMUP_EPOCHS, WARMUP_LR_INIT, LR_MIN,
            MAX_EPOCHS}``).
        epoch: 1-based epoch number.

    Returns:
        The learning rate of that epoch.
    """
    s = cfg.CLIPREID.STAGE1
    return warmup_cosine_lr(epoch, s.BASE_LR, s.MAX_EPOCHS, lr_min=s.LR_MIN, warmup_length=s.WARMUP_EPOCHS,
                            warmup_factor=s.WARMUP_LR_INIT / s.BASE_LR, warmup_method="linear")


class CLIPReIDStage1Hook(HookBase):
    """Runs CLIP-ReID stage 1 in ``before_train`` unless a checkpoint says it is done.

    Args:
        cfg: the config (``CLIPREID.*``, ``SOLVER.SEED``, ``SOLVER.AMP``).
    """

    def __init__(self, cfg):
        if cfg.CLIPREID.PHASES not in PHASES:
            raise ValueError(f"CLIPREID.PHASES must be one of {PHASES}, got {cfg.CLIPREID.PHASES!r}.")
        self.cfg = cfg
        self.done = False
        self.epochs_done = 0
        self._optimizer_state = None
        self._optimizer = None

    # ------------------------------------------------------------------------ resumable state
    def state_dict(self) -> Dict:
        state = {"done": self.done, "epochs_done": self.epochs_done}
        if self._optimizer is not None and not self.done:
            state["optimizer"] = self._optimizer.state_dict()
        return state

    def load_state_dict(self, state: Dict) -> None:
        self.done = bool(state["done"])
        self.epochs_done = int(state["epochs_done"])
        self._optimizer_state = state.get("optimizer")

    # ------------------------------------------------------------------------ the phase
    def before_train(self):
        model = unwrap_model(self.trainer.model)
        if self.cfg.CLIPREID.PHASES == "stage2":
            if not model.has_text_features():
                raise ValueError(
                    "CLIPREID.PHASES is 'stage2' but the model has no stage-1 text features: set "
                    "MODEL.WEIGHTS to a checkpoint written after stage 1 (model_stage1_final.pth), "
                    "or use CLIPREID.PHASES 'both'."
                )
            self.done = True
        if self.done:
            if not model.has_text_features():
                raise ValueError("Stage 1 is marked done but the model holds no text features; the "
                                   "checkpoint is inconsistent. Delete it or train with CLIPREID.PHASES 'both'.")
            logger.info("CLIP-ReID stage 1 already done: continuing with stage 2.")
            return
        self._run_stage1(model)

    def _autocast(self, device: torch.device):
        # the reference extracts features and encodes prompts under fp16 autocast on GPUs
        dtype = resolve_amp_dtype(self.cfg.SOLVER.AMP, device)
        return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)

    @torch.no_grad()
    def _cache_image_features(self, model):
        from clipreid_plugin.data import build_stage1_loader

        s1 = self.cfg.CLIPREID.STAGE1
        loader = build_stage1_loader(self.cfg, batch_size=s1.IMS_PER_BATCH)
        feats: List[torch.Tensor] = []
        labels: List[torch.Tensor] = []
        for i, batch in enumerate(loader):
            with self._autocast(model.device):
                feats.append(model.encode_image_for_stage1(batch["images"]))
            labels.append(batch["targets"].to(model.device))
            log_every_n_seconds(logger, f"Stage 1: cached image features of {i + 1}/{len(loader)} batches",
                                n=10, key="stage1-cache")
        return torch.cat(feats), torch.cat(labels)

    def _run_stage1(self, model):
        cfg, s1 = self.cfg, self.cfg.CLIPREID.STAGE1
        trainer = self.trainer
        logger.info(f"CLIP-ReID stage 1: learning identity prompts for {s1.MAX_EPOCHS} epochs "
                    f"(starting after epoch {self.epochs_done}).")
        if model.text_head is not None:
            logger.info(f"Stage 1 prompt template: {model.text_head.prompt_text!r}")
        image_feats, labels = self._cache_image_features(model)
        n = image_feats.shape[0]
        logger.info(f"Stage 1: cached {n} image features of width {image_feats.shape[1]}.")

        model.set_prompts_trainable(True)
        params = [("prompt_learner.cls_ctx", p) for p in model.stage1_parameters()]
        optimizer = build_optimizer(cfg, None, params=params, base_lr=s1.BASE_LR, weight_decay=s1.WEIGHT_DECAY,
                                    weight_decay_bias=s1.WEIGHT_DECAY, bias_lr_factor=1.0,
                                    optimizer_name=s1.OPTIMIZER)
        if self._optimizer_state is not None:
            optimizer.load_state_dict(self._optimizer_state)
            self._optimizer_state = None
        self._optimizer = optimizer
        fp16 = resolve_amp_dtype(cfg.SOLVER.AMP, model.device) == torch.float16
        scaler = torch.amp.GradScaler(model.device.type) if fp16 else None
        batch = s1.IMS_PER_BATCH
        for epoch in range(self.epochs_done, s1.MAX_EPOCHS):
            lr = stage1_lr(cfg, epoch + 1)
            for g in optimizer.param_groups:
                g["lr"] = lr
            # batches of epoch e depend only on (seed, e): a resumed stage 1 sees the same ones
            gen = torch.Generator().manual_seed(cfg.SOLVER.SEED * 7919 + epoch)
            perm = torch.randperm(n, generator=gen).to(image_feats.device)
            totals: Dict[str, float] = {}
            steps = math.ceil(n / batch)
            for start in range(0, n, batch):
                idx = perm[start:start + batch]
                optimizer.zero_grad(set_to_none=True)
                with self._autocast(model.device):
                    losses = model.stage1_losses(image_feats[idx], labels[idx])
                loss = sum(losses.values())
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                for k, v in losses.items():
                    totals[k] = totals.get(k, 0.0) + float(v.detach()) / steps
            self.epochs_done = epoch + 1
            logger.info(f"Stage 1 epoch {epoch + 1}/{s1.MAX_EPOCHS}  lr: {lr:.3e}  "
                        + "  ".join(f"{k}: {v:.4f}" for k, v in totals.items()))
            if trainer.storage is not None:
                trainer.storage.put_scalars(stage1_lr=lr, **{f"stage1_{k}": v for k, v in totals.items()},
                                            smoothing_hint=False)
            period = s1.CHECKPOINT_PERIOD
            if period > 0 and self.epochs_done % period == 0 and self.epochs_done < s1.MAX_EPOCHS:
                trainer.checkpointer.save(f"model_stage1_{self.epochs_done:04d}")

        model.set_prompts_trainable(False)
        with torch.no_grad(), self._autocast(model.device):
            text_feats = model.compute_all_text_features(batch_size=cfg.SOLVER.IMS_PER_BATCH)
        model.set_text_features(text_feats)
        self.done = True
        self._optimizer = None
        logger.info(f"CLIP-ReID stage 1 done: text features of {text_feats.shape[0]} identities frozen.")
        trainer.checkpointer.save("model_stage1_final")


def _build_clipreid_hooks(trainer) -> List[HookBase]:
    """Hooks of the CLIPReID meta-architecture: stage 1 before the ordinary (stage-2) loop."""
    if trainer.cfg.CLIPREID.PHASES == "stage1":
        trainer.max_epochs = 0  # stop after the prompts are learned
    return [CLIPReIDStage1Hook(trainer.cfg)]


META_HOOK_BUILDERS["CLIPReID"] = _build_clipreid_hooks
