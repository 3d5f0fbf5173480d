"""CLIP-ReID's first training phase as a phase hook (spec 4.1, 4.3).

Named in ``TRAINER.HOOKS`` by the CLIP-ReID base config. Before the engine's ordinary ReID
loop (stage 2) starts, :class:`CLIPReIDStage1Hook`

1. caches the projected image feature of every training image once (test transform, no SIE,
   the image side in eval mode, no gradient);
2. trains only the identity tokens ``cls_ctx`` for ``CLIPREID.STAGE1.MAX_EPOCHS`` epochs on
   random batches of those cached features, with its own Adam and a warmup + cosine schedule
   stepped per epoch. The epochs run through the engine's own loop (:meth:`PhaseHook.run_loop`:
   the main loop's step machinery with autocast, grad scaler, gradient clipping and the
   non-finite stop; progress lines with an ETA; ``metrics.json`` records marked "stage1");
3. computes the text feature of every identity once and freezes it in the model, where the
   stage-2 image-to-text loss reads it.

The hook reaches the model only through :class:`PromptLearningModel`. Its progress (done or
not, epochs finished, optimizer and grad-scaler state) is part of every checkpoint, so
``--resume`` during stage 1 continues the same epoch sequence, and a run interrupted in stage 2
never repeats stage 1. The tokens and the frozen text features live in the model's state dict.

Distributed runs: every process runs the identical stage 1 (same cached features, same seeded
batches), which keeps ``cls_ctx`` equal on all ranks without communication; stage 1 is cheap
next to stage 2.
"""

import logging
import math
from typing import Dict, List, Protocol, Tuple, runtime_checkable

import torch
from torch import nn

from clipreid_plugin.config import configurable
from clipreid_plugin.data import build_inference_loader
from clipreid_plugin.engine import HOOK_REGISTRY, HookBase, PhaseHook
from clipreid_plugin.solver import WarmupCosineLR, build_optimizer
from clipreid_plugin.utils.checkpoint import unwrap_model
from clipreid_plugin.utils.device import autocast
from clipreid_plugin.utils.errors import ConfigError
from clipreid_plugin.utils.logger import log_every_n_seconds

__all__ = ["PromptLearningModel", "CLIPReIDStage1Hook", "CachedFeatureBatches", "build_stage1_optimizer",
           "build_stage1_scheduler", "check_phases"]

logger = logging.getLogger(__name__)

PHASES = ("both", "stage2")


def check_phases(cfg, check_epochs: bool = True) -> None:
    """Check ``CLIPREID.PHASES`` and, when stage 1 is to run, ``CLIPREID.STAGE1.MAX_EPOCHS``.

    Used by the plugin's config check and by :class:`CLIPReIDStage1Hook` (built without that
    check, e.g. in a test or a user's own trainer).

    Args:
        cfg: the config.
        check_epochs: also check the stage-1 epochs (False when ``TRAINER.HOOKS`` does not
            name the stage-1 hook: nothing runs stage 1 then).

    Raises:
        ConfigError: naming the key.
    """
    phases = cfg.CLIPREID.PHASES
    if phases not in PHASES:
        raise ConfigError(f"CLIPREID.PHASES is {phases!r}; valid: {', '.join(map(repr, PHASES))} (stage 1 alone: "
                          f"CLIPREID.PHASES both with SOLVER.MAX_EPOCHS 0).")
    epochs = cfg.CLIPREID.STAGE1.MAX_EPOCHS
    if check_epochs and phases == "both" and epochs <= 0:
        raise ConfigError(f"CLIPREID.STAGE1.MAX_EPOCHS is {epochs}; stage 1 needs at least one epoch (to skip it: "
                          f"CLIPREID.PHASES stage2 with a stage-1 checkpoint in MODEL.WEIGHTS).")


@runtime_checkable
class PromptLearningModel(Protocol):
    """What the stage-1 hook needs from a model (CLIPReID implements it)."""

    def encode_image_for_stage1(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) image features to cache: no gradient, no side information, eval mode."""

    def stage1_parameters(self) -> List[nn.Parameter]:
        """The parameters stage 1 optimises (frozen outside stage 1)."""

    def stage1_losses(self, image_features: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Weighted losses of one step on cached features and their identity labels."""

    def freeze_text_features(self, batch_size: int) -> None:
        """Compute and freeze the text features of every identity (end of stage 1)."""

    def has_text_features(self) -> bool:
        """Whether frozen text features exist (stage 1 ran, or a checkpoint carried them)."""


def build_stage1_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The stage-1 optimizer over ``model.stage1_parameters()`` (``CLIPREID.STAGE1.{OPTIMIZER,
    BASE_LR, WEIGHT_DECAY}``; coupled weight decay on every tensor, as the reference's Adam).

    Args:
        model: a :class:`PromptLearningModel` (its parameters must be trainable already).

    Returns:
        The optimizer, one group per tensor named as in ``model.named_parameters()``.
    """
    s1 = cfg.CLIPREID.STAGE1
    names = {id(p): n for n, p in model.named_parameters()}
    params = [(names.get(id(p), "stage1"), p) for p in model.stage1_parameters()]
    return build_optimizer(cfg, None, params=params, base_lr=s1.BASE_LR, weight_decay=s1.WEIGHT_DECAY,
                           weight_decay_bias=s1.WEIGHT_DECAY, bias_lr_factor=1.0, optimizer_name=s1.OPTIMIZER)


def build_stage1_scheduler(cfg, optimizer: torch.optim.Optimizer) -> WarmupCosineLR:
    """The stage-1 LR schedule: linear warmup from ``WARMUP_LR_INIT``, then timm-style cosine to
    ``LR_MIN`` over ``CLIPREID.STAGE1.MAX_EPOCHS``, stepped before every epoch (so epoch ``e``,
    1-based, trains at position ``e``, as the reference).

    Returns:
        The scheduler, at position 0.
    """
    s1 = cfg.CLIPREID.STAGE1
    return WarmupCosineLR(optimizer, total_length=s1.MAX_EPOCHS, lr_min=s1.LR_MIN,
                          warmup_factor=s1.WARMUP_LR_INIT / s1.BASE_LR, warmup_length=s1.WARMUP_EPOCHS,
                          warmup_method="linear", unit="epoch")


class CachedFeatureBatches:
    """Epochs of random batches over cached (feature, label) pairs.

    The order of epoch ``e`` depends only on (seed, e), so a resumed stage 1 sees the same
    batches as an uninterrupted one.

    Args:
        features: (N, D) cached image features.
        labels: (N,) identity labels.
        batch_size: pairs per batch (the last batch of an epoch may be smaller).
        seed: SOLVER.SEED.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int):
        self.features, self.labels = features, labels
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.features.shape[0] / self.batch_size)

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        perm = torch.randperm(self.features.shape[0], generator=gen).to(self.features.device)
        for start in range(0, perm.numel(), self.batch_size):
            idx = perm[start:start + self.batch_size]
            yield {"features": self.features[idx], "targets": self.labels[idx]}


class _Stage1Objective(nn.Module):
    """What the stage-1 loop trains: a batch of cached features -> the model's stage-1 losses."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self.model.stage1_losses(batch["features"], batch["targets"])


class _Stage1Progress(HookBase):
    """Inner-loop hook: records finished epochs in the phase hook and saves periodic checkpoints."""

    def __init__(self, phase: "CLIPReIDStage1Hook"):
        self.phase = phase

    def before_train(self):
        self.phase._loop = self.trainer

    def after_epoch(self):
        phase = self.phase
        phase.epochs_done = self.trainer.epoch + 1
        period = phase.trainer.cfg.CLIPREID.STAGE1.CHECKPOINT_PERIOD
        if period > 0 and phase.epochs_done % period == 0 and phase.epochs_done < phase.num_epochs:
            self.trainer.check_weights_finite()
            phase.trainer.checkpointer.save(f"model_stage1_{phase.epochs_done:04d}")


@HOOK_REGISTRY.register()
class CLIPReIDStage1Hook(PhaseHook):
    """Runs CLIP-ReID stage 1 in ``before_train`` unless a checkpoint says it is done.

    Built from a config (``CLIPREID.PHASES``, ``CLIPREID.STAGE1.MAX_EPOCHS``) or from plain
    arguments; the rest of stage 1's settings (``CLIPREID.STAGE1.*``, ``SOLVER.SEED``) are read
    from the trainer's config when the phase runs.

    Args:
        phases: "both" (run stage 1) or "stage2" (stage 1's text features come from MODEL.WEIGHTS).
        max_epochs: stage-1 epochs.
    """

    phase_name = "stage1"

    @configurable
    def __init__(self, *, phases: str = "both", max_epochs: int = 60):
        self.phases = phases
        self.num_epochs = 0 if phases == "stage2" else int(max_epochs)
        self.done = False
        self.epochs_done = 0
        self._resume_state: Dict = {}
        self._loop = None

    @classmethod
    def from_config(cls, cfg) -> Dict:
        check_phases(cfg)
        return {"phases": cfg.CLIPREID.PHASES, "max_epochs": cfg.CLIPREID.STAGE1.MAX_EPOCHS}

    # ------------------------------------------------------------------------ resumable state
    def state_dict(self) -> Dict:
        state = {"done": self.done, "epochs_done": self.epochs_done}
        if self._loop is not None and not self.done:
            state["optimizer"] = self._loop.optimizer.state_dict()
            state.update(self._loop.step_state())
        return state

    def load_state_dict(self, state: Dict) -> None:
        self.done = bool(state["done"])
        self.epochs_done = int(state["epochs_done"])
        self._resume_state = dict(state)

    # ------------------------------------------------------------------------ the phase
    def _model(self) -> PromptLearningModel:
        model = unwrap_model(self.trainer.model)
        if not isinstance(model, PromptLearningModel):
            missing = [m for m in ("encode_image_for_stage1", "stage1_parameters", "stage1_losses",
                                   "freeze_text_features", "has_text_features") if not hasattr(model, m)]
            raise ConfigError(f"TRAINER.HOOKS names CLIPReIDStage1Hook, but the model {type(model).__name__} "
                              f"(MODEL.META_ARCHITECTURE) does not learn prompts: it lacks {', '.join(missing)}. "
                              f"Use MODEL.META_ARCHITECTURE CLIPReID or drop the hook.")
        return model

    def before_train(self):
        model = self._model()
        if self.phases == "stage2":
            if not model.has_text_features():
                raise ConfigError(
                    "CLIPREID.PHASES is 'stage2' but the model has no stage-1 text features: set "
                    "MODEL.WEIGHTS to a checkpoint written after stage 1 (model_stage1_final.pth), "
                    "or use CLIPREID.PHASES 'both'."
                )
            self.done = True
        if self.done:
            if not model.has_text_features():
                raise ConfigError("Stage 1 is marked done but the model holds no text features; the "
                                  "checkpoint is inconsistent. Delete it or train with CLIPREID.PHASES 'both'.")
            logger.info("CLIP-ReID stage 1 already done: continuing with stage 2.")
            return
        self._run_stage1(model)

    @torch.no_grad()
    def _cache_image_features(self, model) -> Tuple[torch.Tensor, torch.Tensor]:
        # the training samples of the main loop, in their order, with the test transform
        samples = self.trainer.data_loader.dataset
        cfg = self.trainer.cfg
        loader = build_inference_loader(cfg, samples, cfg.CLIPREID.STAGE1.IMS_PER_BATCH, "stage1")
        device = next(model.parameters()).device
        feats: List[torch.Tensor] = []
        labels: List[torch.Tensor] = []
        for i, batch in enumerate(loader):
            # the reference extracts features under fp16 autocast on GPUs
            with autocast(device.type, self.trainer.amp_dtype):
                feats.append(model.encode_image_for_stage1(batch["images"]))
            labels.append(batch["targets"].to(device))
            log_every_n_seconds(logger, f"Stage 1: cached image features of {i + 1}/{len(loader)} batches",
                                n=10, key="stage1-cache")
        return torch.cat(feats), torch.cat(labels)

    def _run_stage1(self, model) -> None:
        cfg = self.trainer.cfg
        s1 = cfg.CLIPREID.STAGE1
        logger.info(f"CLIP-ReID stage 1: learning identity prompts for {self.num_epochs} epochs "
                    f"(starting after epoch {self.epochs_done}).")
        text_head = getattr(model, "text_head", None)
        if text_head is not None and hasattr(text_head, "prompt_text"):
            logger.info(f"Stage 1 prompt template: {text_head.prompt_text!r}")
        image_feats, labels = self._cache_image_features(model)
        logger.info(f"Stage 1: cached {image_feats.shape[0]} image features of width {image_feats.shape[1]}.")

        params = model.stage1_parameters()
        for p in params:
            p.requires_grad_(True)
        optimizer = build_stage1_optimizer(cfg, model)
        if "optimizer" in self._resume_state:
            optimizer.load_state_dict(self._resume_state["optimizer"])
        scheduler = build_stage1_scheduler(cfg, optimizer)
        for _ in range(self.epochs_done):  # the schedule is a function of the position: catch up
            scheduler.step()
        batches = CachedFeatureBatches(image_feats, labels, s1.IMS_PER_BATCH, cfg.SOLVER.SEED)
        loop = self.run_loop(_Stage1Objective(model), batches, optimizer, scheduler, self.epochs_done,
                             hooks=[_Stage1Progress(self)], step_state=self._resume_state)
        for p in params:
            p.requires_grad_(False)
        device = next(model.parameters()).device
        with autocast(device.type, self.trainer.amp_dtype):
            model.freeze_text_features(cfg.SOLVER.IMS_PER_BATCH)
        loop.check_weights_finite()
        self.done = True
        self._loop = None
        self._resume_state = {}
        logger.info("CLIP-ReID stage 1 done: text features of every identity frozen.")
        self.trainer.checkpointer.save("model_stage1_final")
