"""CLIPReID: the CLIP-ReID model (Li, Sun, Li, AAAI 2023), the CLIP baseline plus a text side.

Training has two phases (spec 4.1-4.2), driven by the trainer's two-phase hook:

1. **Stage 1** learns identity-specific prompt tokens ``cls_ctx`` against fixed image features:
   the hook caches :meth:`CLIPReID.encode_image_for_stage1` for every training image, turns
   the prompts trainable (:meth:`CLIPReID.set_prompts_trainable`), optimises
   :meth:`CLIPReID.stage1_parameters` with :meth:`CLIPReID.stage1_losses`, then freezes the
   text features of every identity (:meth:`CLIPReID.compute_all_text_features` ->
   :meth:`CLIPReID.set_text_features`).
2. **Stage 2** is ordinary ReID training of the image side: ID and triplet losses as
   :class:`CLIPBaseline` plus the image-to-text cross-entropy on
   ``i2t_logits = feat_proj @ text_features.T``. The text side is frozen (requires_grad False),
   so an optimizer built over the trainable parameters holds the image side only, as the
   reference's make_optimizer_2stage.

The frozen text features live in a buffer saved with the model, so stage 2 resumes (and a
stage-1 result can be reused) without recomputing them.
"""

import logging
from typing import Dict, List, Optional

import torch
from torch import nn

from ..backbones import build_backbone
from ..backbones.clip_backbone import CLIPImageEncoder, load_clip_from_config
from ..heads.bnneck import BNNeck
from ..heads.prompt_learner import PromptLearnerHead
from ..losses import LOSS_REGISTRY
from ..losses import image_text  # noqa: F401  (registers the image-text losses)
from .build import META_ARCH_REGISTRY
from .clip_baseline import CLIPBaseline

__all__ = ["CLIPReID", "ProjectedImageEncoder"]

logger = logging.getLogger(__name__)


class ProjectedImageEncoder(nn.Module):
    """Any registered (non-CLIP) backbone plus a learned linear map into CLIP's text space.

    Gives the two features CLIPReID needs from an image: ``feat`` (global average of the
    backbone's map) and ``feat_proj`` (its projection, compared with the text features).

    Args:
        backbone: a backbone from BACKBONE_REGISTRY (output (B, C, h, w) or (B, C)).
        embed_dim: width of the text features.
    """

    def __init__(self, backbone: nn.Module, embed_dim: int):
        super().__init__()
        self.body = backbone
        self.in_planes = backbone.out_features
        self.in_planes_proj = embed_dim
        self.out_features = self.in_planes
        self.proj = nn.Linear(self.in_planes, embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=self.in_planes ** -0.5)  # CLIP's projection init
        self.sie_camera = self.sie_view = False

    # Same semantics as the CLIP encoder's: eval mode inside, every sub-module's mode restored.
    eval_mode = CLIPImageEncoder.eval_mode

    def forward(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Args: images (B, 3, H, W); camids/viewids are ignored (no SIE).

        Returns:
            dict with ``feat`` (B, in_planes) and ``feat_proj`` (B, embed_dim).
        """
        x = self.body(images)
        feat = x.mean(dim=(2, 3)) if x.dim() == 4 else x
        return {"feat": feat, "feat_proj": self.proj(feat)}

    def get_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Returns: (B, embed_dim) projected features (stage 1 caches these)."""
        return self(images)["feat_proj"]


def _text_tower_config(cfg):
    """The config that loads the CLIP model for the text tower alone: its weights come from
    ``MODEL.PROMPT.TEXT_WEIGHTS`` (``MODEL.BACKBONE.PRETRAIN_PATH`` belongs to the image backbone)."""
    text_cfg = cfg.clone()
    text_cfg.defrost()
    weights = cfg.MODEL.PROMPT.TEXT_WEIGHTS
    text_cfg.MODEL.BACKBONE.PRETRAIN_PATH = weights
    text_cfg.MODEL.BACKBONE.PRETRAIN = bool(weights or cfg.MODEL.BACKBONE.CLIP.PRETRAINED_TAG)
    if not text_cfg.MODEL.BACKBONE.PRETRAIN:
        logger.warning("CLIPReID with a non-CLIP backbone: no MODEL.PROMPT.TEXT_WEIGHTS nor "
                       "MODEL.BACKBONE.CLIP.PRETRAINED_TAG, so the CLIP text tower is random.")
    return text_cfg


@META_ARCH_REGISTRY.register()
class CLIPReID(CLIPBaseline):
    """CLIP image encoder + BNNecks (as :class:`CLIPBaseline`) + prompt learner and frozen
    CLIP text tower (:class:`PromptLearnerHead`, attribute ``text_head``).

    One CLIP model is loaded (``MODEL.BACKBONE.*``) and serves both towers. With
    ``MODEL.BACKBONE.NAME`` other than ``build_clip_backbone`` (e.g. a torchvision ResNet),
    the image side is that backbone plus a learned projection into the text space
    (:class:`ProjectedImageEncoder`), the triplet loss uses its two features, and the text
    tower comes from ``MODEL.BACKBONE.CLIP.MODEL_NAME`` with ``MODEL.PROMPT.TEXT_WEIGHTS``.

    Training outputs for the losses: CLIPBaseline's (``cls_outputs``, ``triplet_features``)
    plus ``i2t_logits`` once the text features are set. With ``MODEL.HEADS.NUM_CLASSES`` 0
    (evaluation only) no text side is built.

    Args:
        cfg: the config.
    """

    REFERENCE_KEY_MAP = CLIPBaseline.REFERENCE_KEY_MAP + [
        ("prompt_learner.", "text_head.prompt_learner."),
        ("text_encoder.", "text_head.text_encoder."),
    ]

    def __init__(self, cfg):
        clip_backbone = cfg.MODEL.BACKBONE.NAME == "build_clip_backbone"
        clip_model = load_clip_from_config(cfg if clip_backbone else _text_tower_config(cfg))
        super().__init__(cfg, clip_model)
        num_classes = cfg.MODEL.HEADS.NUM_CLASSES
        self.text_head: Optional[PromptLearnerHead] = None
        if num_classes > 0:
            self.text_head = PromptLearnerHead(cfg, self.backbone.in_planes_proj, clip_model)
        else:
            logger.info("MODEL.HEADS.NUM_CLASSES is 0: CLIPReID built for evaluation only (no text side).")
        if not clip_backbone:
            # Replace the CLIP image tower (built above, now dropped) by the configured backbone.
            embed_dim = self.text_head.out_dim if self.text_head is not None else self.backbone.in_planes_proj
            self.backbone = ProjectedImageEncoder(build_backbone(cfg), embed_dim)
            std = cfg.MODEL.HEADS.CLS_INIT_STD
            self.neck = BNNeck(self.backbone.in_planes, num_classes, std)
            self.neck_proj = BNNeck(self.backbone.in_planes_proj, num_classes, std)
        self.stage1_loss_modules = nn.ModuleList(LOSS_REGISTRY.get(n)(cfg) for n in cfg.CLIPREID.STAGE1.LOSS_NAMES)

    # ------------------------------------------------------------------ stage 2 (training step)
    def extract_features(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None,
                         viewids: Optional[torch.Tensor] = None) -> Dict[str, object]:
        """CLIPBaseline's features; with a non-CLIP backbone the triplet loss uses the two
        features it has (``feat``, ``feat_proj``).

        Args:
            images: (B, 3, H, W) on the model's device.
            camids, viewids: (B,) ids, used only with SIE.

        Returns:
            See :meth:`CLIPBaseline.extract_features`.
        """
        if isinstance(self.backbone, CLIPImageEncoder):
            return super().extract_features(images, camids, viewids)
        out: Dict[str, object] = dict(self.backbone(images))
        out["bn_feat"], logits = self.neck(out["feat"])
        out["bn_feat_proj"], logits_proj = self.neck_proj(out["feat_proj"])
        if self.training:
            out["cls_outputs"] = [logits, logits_proj]
            out["triplet_features"] = [out["feat"], out["feat_proj"]]
        return out

    def compute_losses(self, outputs: Dict[str, object], targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Add ``i2t_logits`` (projected image feature @ frozen text features.T, raw dot
        products) when the text features are set, then apply every configured loss.

        Args:
            outputs: :meth:`extract_features`'s training dict.
            targets: (B,) identity labels 0..C-1.

        Returns:
            ``{"loss_<name>": scalar}``, already weighted.
        """
        if self.text_head is not None and self.text_head.has_text_features():
            outputs["i2t_logits"] = outputs["feat_proj"] @ self.text_head.text_features.t()
        return super().compute_losses(outputs, targets)

    # ------------------------------------------------------------------ stage 1 (prompt learning)
    def _text(self) -> PromptLearnerHead:
        if self.text_head is None:
            raise RuntimeError(
                "This CLIPReID model has no text side: MODEL.HEADS.NUM_CLASSES was 0 when it was "
                "built. Set it to the number of training identities to train CLIP-ReID."
            )
        return self.text_head

    @torch.no_grad()
    def encode_image_for_stage1(self, images: torch.Tensor) -> torch.Tensor:
        """The projected image feature stage 1 caches: no SIE, no gradient, and the image
        tower in eval mode (the reference's CLIP sub-modules are in eval mode then, so
        ModifiedResNet BatchNorm uses its running statistics); modes are restored after.

        Args:
            images: (B, 3, H, W) normalised with the test-time transform.

        Returns:
            (B, D) features (D = text feature width).
        """
        images = images.to(self.device, non_blocking=True)
        with self.backbone.eval_mode():
            return self.backbone.get_image_features(images)

    def text_features(self, labels: torch.Tensor) -> torch.Tensor:
        """Prompt learner + text encoder for the given identities.

        Args:
            labels: (B,) identity indices 0..C-1.

        Returns:
            (B, D) text features; differentiable w.r.t. ``cls_ctx`` while it is trainable.
        """
        return self._text()(labels.to(self.device, non_blocking=True))

    def stage1_parameters(self) -> List[nn.Parameter]:
        """Returns: the parameters stage 1 optimises (only ``cls_ctx``)."""
        return [self._text().prompt_learner.cls_ctx]

    def set_prompts_trainable(self, enabled: bool) -> None:
        """Turn ``cls_ctx``'s requires_grad on for stage 1 and off again for stage 2.

        Args:
            enabled: True during stage 1.
        """
        self._text().set_prompts_trainable(enabled)

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
        losses: Dict[str, torch.Tensor] = {}
        for loss in self.stage1_loss_modules:
            losses.update(loss(outputs, labels))
        return losses

    def compute_all_text_features(self, batch_size: int = 64) -> torch.Tensor:
        """Text features of every identity, ``batch_size`` identities per pass, no gradient.

        Args:
            batch_size: identities per text-encoder pass.

        Returns:
            (C, D) float32 features.
        """
        return self._text().compute_all_text_features(batch_size)

    def set_text_features(self, feats: torch.Tensor) -> None:
        """Freeze ``feats`` (C, D) as the stage-2 text classifier (saved in checkpoints)."""
        self._text().set_text_features(feats)

    def has_text_features(self) -> bool:
        """Returns: whether the stage-2 text features are set (by stage 1 or a checkpoint)."""
        return self.text_head is not None and self.text_head.has_text_features()
