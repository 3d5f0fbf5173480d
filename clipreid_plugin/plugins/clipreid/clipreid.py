"""CLIPReID: the CLIP-ReID model (Li, Sun, Li, AAAI 2023): the CLIP baseline plus a text side.

Training has two phases (spec 4.1-4.2):

1. **Stage 1** (:class:`~clipreid_plugin.plugins.clipreid.stage1.CLIPReIDStage1Hook`, named in
   ``TRAINER.HOOKS``) learns identity-specific prompt tokens ``cls_ctx`` against fixed image
   features, through the model's :class:`~clipreid_plugin.plugins.clipreid.stage1.PromptLearningModel`
   methods: it caches :meth:`CLIPReID.encode_image_for_stage1` for every training image,
   optimises :meth:`CLIPReID.stage1_parameters` with :meth:`CLIPReID.stage1_losses`, then
   :meth:`CLIPReID.freeze_text_features`.
2. **Stage 2** is ordinary ReID training of the image side: ID and triplet losses as
   :class:`CLIPBaseline` plus the image-to-text cross-entropy on
   ``i2t_logits = feat_proj @ text_features.T``. The text side is frozen (requires_grad False),
   so an optimizer built over the trainable parameters holds the image side only, as the
   reference's make_optimizer_2stage.

The image side is any registered backbone (a CLIP image tower in the paper; a torchvision
ResNet or ViT gets a learned projection into the text space). The text head is built from
``CLIPREID.PROMPT.HEAD_NAME`` (a "text" head of HEAD_REGISTRY). With a CLIP image backbone and no
``CLIPREID.PROMPT.TEXT_WEIGHTS``, both towers come from one load of the same CLIP weights.

The frozen text features live in a buffer saved with the model, so stage 2 resumes (and a
stage-1 result can be reused) without recomputing them.
"""

import logging
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from clipreid_plugin.config import configurable
from clipreid_plugin.modeling import (LOSS_REGISTRY, META_ARCH_REGISTRY, apply_losses, build_backbone, build_head,
                                      eval_mode, full_precision, weights_replace_pretrained)
from clipreid_plugin.utils.errors import ConfigError

from .backbone import CLIPImageEncoder, load_clip_from_config, shared_clip_models
from .clip_baseline import CLIPBaseline

__all__ = ["CLIPReID"]

logger = logging.getLogger(__name__)


def _text_clip_model(cfg, backbone: nn.Module) -> nn.Module:
    """The CLIP model whose text tower the text head uses (see ``CLIPREID.PROMPT.TEXT_WEIGHTS``).

    When ``MODEL.WEIGHTS`` overwrites every tensor (``weights_replace_pretrained``), no text
    weights file is read either."""
    weights = "" if weights_replace_pretrained(cfg) else cfg.CLIPREID.PROMPT.TEXT_WEIGHTS
    if not weights and isinstance(backbone, CLIPImageEncoder):
        return load_clip_from_config(cfg)  # the backbone's own CLIP model (shared load)
    if weights_replace_pretrained(cfg):
        return load_clip_from_config(cfg, weights="")
    if not weights and not (cfg.MODEL.BACKBONE.PRETRAIN and cfg.CLIPREID.BACKBONE.PRETRAINED_TAG):
        logger.warning("CLIPReID with a non-CLIP backbone and neither CLIPREID.PROMPT.TEXT_WEIGHTS nor "
                       "CLIPREID.BACKBONE.PRETRAINED_TAG: the CLIP text tower is random.")
    return load_clip_from_config(cfg, weights=weights)


@META_ARCH_REGISTRY.register()
class CLIPReID(CLIPBaseline):
    """Backbone + BNNecks (as :class:`CLIPBaseline`) + a text head (``text_head``: prompt
    learner and frozen CLIP text tower) whose text features classify the projected image feature.

    Training outputs for the losses: CLIPBaseline's (``cls_outputs``, ``triplet_features``)
    plus ``i2t_logits`` once the text features are set. With ``MODEL.HEADS.NUM_CLASSES`` 0
    (evaluation only) no text side is built.

    Built from a config (``CLIPReID(cfg)``) or from plain arguments.

    Args:
        text_head: the "text" head (None = evaluation only).
        stage1_losses: the stage-1 loss modules (``CLIPREID.STAGE1.LOSS_NAMES``).
        **kwargs: :class:`CLIPBaseline`'s arguments; ``proj_dim`` is the text tower's width.

    Raises:
        ConfigError: (from a config) ``CLIPREID.PROJ_DIM`` differs from the text tower's width
            (the image feature could not be compared with the text features).
    """

    REFERENCE_KEY_MAP = CLIPBaseline.REFERENCE_KEY_MAP + [
        ("prompt_learner.", "text_head.prompt_learner."),
        ("text_encoder.", "text_head.text_encoder."),
    ]

    @configurable
    def __init__(self, *, text_head: Optional[nn.Module] = None, stage1_losses: Sequence[nn.Module] = (), **kwargs):
        if text_head is not None:
            kwargs["proj_dim"] = text_head.out_dim
        super().__init__(**kwargs)
        self.text_head = text_head
        if text_head is None:
            logger.info("MODEL.HEADS.NUM_CLASSES is 0: CLIPReID built for evaluation only (no text side).")
        self.stage1_loss_modules = nn.ModuleList(stage1_losses)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        with shared_clip_models():
            backbone = build_backbone(cfg)
            text_head = None
            if cfg.MODEL.HEADS.NUM_CLASSES > 0:
                text_head = build_head(cfg.CLIPREID.PROMPT.HEAD_NAME, cfg, getattr(backbone, "proj_features", 0),
                                       kind="text", key="CLIPREID.PROMPT.HEAD_NAME",
                                       clip_model=_text_clip_model(cfg, backbone))
        proj_dim = text_head.out_dim if text_head is not None else None
        asked = cfg.CLIPREID.PROJ_DIM
        if proj_dim is not None and asked and asked != proj_dim:
            raise ConfigError(f"CLIPREID.PROJ_DIM is {asked}, but CLIPReID compares the projected image feature "
                              f"with text features of width {proj_dim}: set it to 0 (auto) or {proj_dim}.")
        stage1 = [LOSS_REGISTRY.build(n, cfg, key="CLIPREID.STAGE1.LOSS_NAMES") for n in cfg.CLIPREID.STAGE1.LOSS_NAMES]
        return dict(super().from_config(cfg, backbone=backbone, proj_dim=proj_dim), text_head=text_head,
                    stage1_losses=stage1)

    # ------------------------------------------------------------------ stage 2 (training step)
    def compute_losses(self, outputs: Dict[str, object], targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Add ``i2t_logits`` (projected image feature @ frozen text features.T, raw dot
        products, in fp32 under any autocast) when the text features are set, then apply every
        configured loss.

        Args:
            outputs: :meth:`extract_features`'s training dict.
            targets: (B,) identity labels 0..C-1.

        Returns:
            ``{"loss_<name>": scalar}``, already weighted.
        """
        if self.has_text_features():
            # in fp32 whatever the autocast dtype: under bf16 (8-bit mantissa) the logits of
            # close identities would round together (the reference computes them in fp16)
            with full_precision(outputs["feat_proj"], self.text_head.text_features) as (feat, text):
                outputs["i2t_logits"] = feat @ text.t()
        return super().compute_losses(outputs, targets)

    # ------------------------------------------------------------------ stage 1 (PromptLearningModel)
    def _text(self) -> nn.Module:
        if self.text_head is None:
            raise ConfigError(
                "This CLIPReID model has no text side: MODEL.HEADS.NUM_CLASSES was 0 when it was "
                "built. Set it to the number of training identities to train CLIP-ReID."
            )
        return self.text_head

    @torch.no_grad()
    def encode_image_for_stage1(self, images: torch.Tensor) -> torch.Tensor:
        """The projected image feature stage 1 caches: no SIE, no gradient, and the image side
        in eval mode (the reference's CLIP sub-modules are in eval mode then, so ModifiedResNet
        BatchNorm uses its running statistics); modes are restored after.

        Args:
            images: (B, 3, H, W) normalised with the test-time transform.

        Returns:
            (B, D) features (D = text feature width).
        """
        images = images.to(self.device, non_blocking=True)
        with eval_mode(self.backbone):
            return self.project(self.backbone(images))

    def text_features(self, labels: torch.Tensor) -> torch.Tensor:
        """Prompt learner + text encoder for the given identities.

        Args:
            labels: (B,) identity indices 0..C-1.

        Returns:
            (B, D) text features; differentiable w.r.t. ``cls_ctx`` while it is trainable.
        """
        return self._text()(labels.to(self.device, non_blocking=True))

    def stage1_parameters(self) -> List[nn.Parameter]:
        """Returns: the parameters stage 1 optimises (only ``cls_ctx``; frozen outside stage 1)."""
        return [self._text().prompt_learner.cls_ctx]

    def stage1_losses(self, image_features: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Losses of one stage-1 step: text features of ``labels`` against cached image features.

        Args:
            image_features: (B, D) cached features (:meth:`encode_image_for_stage1`; any
                float dtype, any device).
            labels: (B,) their identities.

        Returns:
            ``{"loss_<name>": scalar}`` of the ``CLIPREID.STAGE1.LOSS_NAMES`` losses, weighted.
        """
        labels = labels.to(self.device, non_blocking=True)
        outputs = {"image_features": image_features.to(self.device, non_blocking=True),
                   "text_features": self.text_features(labels)}
        return apply_losses(self.stage1_loss_modules, outputs, labels, names_key="CLIPREID.STAGE1.LOSS_NAMES")

    def compute_all_text_features(self, batch_size: int = 64) -> torch.Tensor:
        """Text features of every identity, ``batch_size`` identities per pass, no gradient.

        Returns:
            (C, D) features in the model's dtype.
        """
        return self._text().compute_all_text_features(batch_size)

    def set_text_features(self, feats: torch.Tensor) -> None:
        """Freeze ``feats`` (C, D) as the stage-2 text classifier (saved in checkpoints)."""
        self._text().set_text_features(feats)

    @torch.no_grad()
    def freeze_text_features(self, batch_size: int = 64) -> None:
        """End of stage 1: compute the text features of every identity and freeze them for stage 2.

        Args:
            batch_size: identities per text-encoder pass.
        """
        self.set_text_features(self.compute_all_text_features(batch_size))

    def has_text_features(self) -> bool:
        """Returns: whether the stage-2 text features are set (by stage 1 or a checkpoint)."""
        return self.text_head is not None and self.text_head.has_text_features()
