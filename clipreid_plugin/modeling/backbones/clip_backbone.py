"""open_clip image towers (ViT or ModifiedResNet) adapted for ReID, as CLIP-ReID adapts them.

Adaptations (CLIPREID_SPEC.md 2.2-2.4):

* non-square input: the positional embedding is resized bilinearly (class row kept) to the
  patch grid of ``INPUT.SIZE_TRAIN``; for ModifiedResNet the attention-pool embedding is;
* overlapping patches: the ViT patch conv gets ``MODEL.BACKBONE.CLIP.STRIDE_SIZE``;
* ModifiedResNet layer4 runs with stride 1 (a 16x8 map at 256x128, no weight change);
* SIE: a learned camera/view embedding, times ``SIE_COE``, added to the class token only;
* three features per image: ViT = class token after the second-to-last block (no ln_post),
  after ln_post, and projected; ModifiedResNet = GAP(layer3), GAP(layer4), attention-pool
  token 0.

The forward is written here, batch-first (open_clip 3.x transformers are batch-first; the
``permute(1, 0, 2)`` of OpenAI/CLIP-ReID code would be silently wrong, PITFALLS 2-3). The
visual tower keeps open_clip's parameter names under ``self.visual`` (``visual.conv1.weight``,
``visual.transformer.resblocks.0...``), which are OpenAI's names too.
"""

import contextlib
import logging
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from clipreid_plugin.interop.clip_weights import load_clip

from .build import BACKBONE_REGISTRY
from .clip_pos_embed import patch_grid, resize_pos_embed

__all__ = ["CLIPImageEncoder", "build_clip_backbone", "build_clip_image_encoder", "load_clip_from_config"]

logger = logging.getLogger(__name__)


def load_clip_from_config(cfg):
    """Build the whole CLIP model (both towers) from ``MODEL.BACKBONE.*`` keys.

    ``MODEL.BACKBONE.PRETRAIN`` True loads ``PRETRAIN_PATH`` (a local OpenAI or open_clip file)
    or, when that is empty, ``MODEL.BACKBONE.CLIP.PRETRAINED_TAG``; False gives random weights
    (to be overwritten by a full checkpoint in ``MODEL.WEIGHTS``).

    Args:
        cfg: the config.

    Returns:
        open_clip CLIP model in float32 (see :func:`clipreid_plugin.interop.load_clip`).
    """
    b = cfg.MODEL.BACKBONE
    c = b.CLIP
    qg = {"auto": None, "on": True, "off": False}.get(str(c.QUICK_GELU).lower())
    if str(c.QUICK_GELU).lower() not in ("auto", "on", "off"):
        raise ValueError(f"MODEL.BACKBONE.CLIP.QUICK_GELU must be 'auto', 'on' or 'off', got {c.QUICK_GELU!r}.")
    if b.PRETRAIN and not (b.PRETRAIN_PATH or c.PRETRAINED_TAG):
        raise ValueError(
            "MODEL.BACKBONE.PRETRAIN is True but neither MODEL.BACKBONE.PRETRAIN_PATH (a local CLIP "
            "weights file, e.g. ~/.cache/clip/ViT-B-16.pt) nor MODEL.BACKBONE.CLIP.PRETRAINED_TAG is set."
        )
    if not b.PRETRAIN:
        return load_clip(c.MODEL_NAME, quick_gelu=qg)
    return load_clip(c.MODEL_NAME, weights=b.PRETRAIN_PATH, pretrained_tag="" if b.PRETRAIN_PATH else c.PRETRAINED_TAG,
                     quick_gelu=qg)


class CLIPImageEncoder(nn.Module):
    """A CLIP image tower producing the three CLIP-ReID features.

    Attributes:
        visual: the open_clip tower (``VisionTransformer`` or ``ModifiedResNet``), adapted.
        cv_embed: SIE table (num_cameras*num_views | num_cameras | num_views, width) or None.
        is_vit: whether the tower is a ViT.
        in_planes: width of ``feat_last``'s sibling ``feat`` (768 ViT-B/16, 2048 RN50).
        in_planes_proj: width of the projected feature (512 ViT-B/16, 1024 RN50).
        out_features: same as ``in_planes`` (backbone registry protocol).

    Args:
        visual: open_clip image tower in float32.
        image_size: (H, W) training input size; sizes the positional embedding.
        stride: ViT patch-conv stride (sh, sw); ignored for ModifiedResNet.
        sie_camera / sie_view: add a camera / view embedding to the class token (ViT only).
        num_cameras / num_views: number of camera / view ids in the training set.
        sie_coe: multiplier of the SIE embedding.
        grad_checkpointing: recompute each transformer block in backward (ViT only).
    """

    def __init__(self, visual: nn.Module, image_size: Tuple[int, int], stride: Tuple[int, int] = (16, 16),
                 sie_camera: bool = False, sie_view: bool = False, num_cameras: int = 0, num_views: int = 0,
                 sie_coe: float = 3.0, grad_checkpointing: bool = False):
        super().__init__()
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        self.visual = visual
        self.image_size = tuple(int(s) for s in image_size)
        if isinstance(visual, VisionTransformer):
            self.is_vit = True
            self._adapt_vit(tuple(int(s) for s in stride))
            width = visual.conv1.out_channels
            self.in_planes = width
            self.in_planes_proj = visual.proj.shape[1] if visual.proj is not None else width
        elif isinstance(visual, ModifiedResNet):
            self.is_vit = False
            self._adapt_resnet()
            self.in_planes = visual.attnpool.k_proj.in_features
            self.in_planes_proj = visual.attnpool.c_proj.out_features
        else:
            raise ValueError(
                f"Unsupported CLIP image tower {type(visual).__name__}: only open_clip's VisionTransformer "
                f"and ModifiedResNet towers (ViT-*/RN* models without timm/HF towers) can be ReID backbones."
            )
        self.out_features = self.in_planes

        # SIE (spec 2.5): one row per camera, per view, or per (camera, view) pair.
        self.sie_camera, self.sie_view, self.sie_coe = bool(sie_camera), bool(sie_view), float(sie_coe)
        self.num_cameras, self.num_views = int(num_cameras), int(num_views)
        self.cv_embed = None
        if (self.sie_camera or self.sie_view) and not self.is_vit:
            # The reference creates the table for RN50 but never uses it.
            logger.warning("SIE (MODEL.BACKBONE.CLIP.SIE_CAMERA/SIE_VIEW) is ignored for ModifiedResNet towers.")
            self.sie_camera = self.sie_view = False
        if self.sie_camera and self.num_cameras <= 0:
            raise ValueError("SIE_CAMERA needs MODEL.BACKBONE.CLIP.NUM_CAMERAS > 0 (the trainer fills it from the "
                             "training set; set it by hand when building the model yourself).")
        if self.sie_view and self.num_views <= 0:
            raise ValueError("SIE_VIEW needs MODEL.BACKBONE.CLIP.NUM_VIEWS > 0 (the trainer fills it from the "
                             "training set; set it by hand when building the model yourself).")
        rows = (self.num_cameras if self.sie_camera else 1) * (self.num_views if self.sie_view else 1)
        if self.sie_camera or self.sie_view:
            self.cv_embed = nn.Parameter(torch.zeros(rows, self.in_planes))
            # timm trunc_normal_(std=.02) as the reference: bounds +-2 absolute, i.e. a plain normal.
            nn.init.trunc_normal_(self.cv_embed, std=0.02, a=-2.0, b=2.0)

        self.grad_checkpointing = False
        self.set_grad_checkpointing(grad_checkpointing)

    # ----------------------------------------------------------------------------- adaptation
    def _adapt_vit(self, stride: Tuple[int, int]) -> None:
        v = self.visual
        if v.attn_pool is not None or getattr(v, "pool_type", "tok") != "tok":
            raise ValueError("This ViT tower pools without a class token (attentional/avg pool); CLIP-ReID "
                             "features need the class token.")
        patch = v.conv1.kernel_size
        if patch[0] != patch[1]:
            raise ValueError(f"Non-square patches {patch} are not supported.")
        if stride[0] > patch[0] or stride[1] > patch[1]:
            logger.warning("MODEL.BACKBONE.CLIP.STRIDE_SIZE %s is larger than the %dx%d patches: pixels between "
                           "patches are never seen. Use the patch size (or less, for overlapping patches).",
                           list(stride), patch[0], patch[1])
        v.conv1.stride = stride
        src = tuple(v.grid_size)
        dst = patch_grid(self.image_size, patch[0], stride)
        with torch.no_grad():
            v.positional_embedding = nn.Parameter(resize_pos_embed(v.positional_embedding.data, src, dst))
        v.grid_size = dst
        v.image_size = self.image_size
        self.grid_size = dst

    def _adapt_resnet(self) -> None:
        v = self.visual
        # Last-stride trick: layer4 keeps the layer3 resolution (its avg-pools become identities).
        block = v.layer4[0]
        block.avgpool = nn.Identity()
        if block.downsample is not None:
            block.downsample._modules["-1"] = nn.Identity()
        block.stride = 1
        pe = v.attnpool.positional_embedding
        g = round((pe.shape[0] - 1) ** 0.5)
        # Feature map = input / 16 with layer4 at stride 1 (the reference's (H-16)//16+1 formula).
        dst = patch_grid(self.image_size, 16, (16, 16))
        with torch.no_grad():
            v.attnpool.positional_embedding = nn.Parameter(resize_pos_embed(pe.data, (g, g), dst))
        v.image_size = self.image_size
        self.grid_size = dst

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute transformer blocks during backward to save activation memory (ViT only).

        ModifiedResNet is left alone: open_clip offers no checkpointing for it and recomputing
        BatchNorm in train mode would update its running statistics twice.
        """
        if enable and not self.is_vit:
            logger.warning("Gradient checkpointing is only available for ViT towers; ignored for ModifiedResNet.")
            enable = False
        self.grad_checkpointing = bool(enable)
        if self.is_vit:
            self.visual.set_grad_checkpointing(self.grad_checkpointing)

    # ----------------------------------------------------------------------------- SIE
    def sie_embedding(self, camids: Optional[torch.Tensor], viewids: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The SIE vector per image (already times SIE_COE), or None without SIE.

        Args:
            camids: (B,) 0-based camera ids (needed with SIE_CAMERA).
            viewids: (B,) 0-based view ids (needed with SIE_VIEW).

        Returns:
            (B, width) tensor or None.
        """
        if self.cv_embed is None:
            return None
        if self.sie_camera and camids is None or self.sie_view and viewids is None:
            raise ValueError("SIE is enabled but the batch has no camids/viewids.")
        if self.sie_camera and self.sie_view:
            idx = self._check_ids(camids, self.num_cameras, "camera") * self.num_views + \
                self._check_ids(viewids, self.num_views, "view")
        elif self.sie_camera:
            idx = self._check_ids(camids, self.num_cameras, "camera")
        else:
            idx = self._check_ids(viewids, self.num_views, "view")
        return self.sie_coe * self.cv_embed[idx]

    def _check_ids(self, ids: torch.Tensor, n: int, what: str) -> torch.Tensor:
        ids = ids.to(self.cv_embed.device).long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise ValueError(f"A {what} id in the batch ({ids.tolist()}) is outside 0..{n - 1}: the SIE table was "
                             f"sized for {n} {what}s (MODEL.BACKBONE.CLIP.NUM_{what.upper()}S; the evaluation set "
                             f"must use the training set's {what} ids).")
        return ids

    # ----------------------------------------------------------------------------- forward
    def _check_input(self, images: torch.Tensor) -> None:
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(
                f"Input images are {tuple(images.shape[-2:])} but the CLIP backbone was built for "
                f"{self.image_size} (INPUT.SIZE_TRAIN sizes the positional embedding; INPUT.SIZE_TEST must match)."
            )

    def _run_block(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(blk, x, use_reentrant=False)
        return blk(x)  # nn.MultiheadAttention with need_weights=False runs fused SDPA

    def _vit_tokens(self, images: torch.Tensor, sie: Optional[torch.Tensor]):
        v = self.visual
        x = v.conv1(images)  # (B, C, gh, gw)
        x = x.flatten(2).transpose(1, 2)  # (B, gh*gw, C), row-major like the reference
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        if sie is not None:
            cls = cls + sie.to(x.dtype).unsqueeze(1)  # SIE on the class token only, before pos-emb
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.patch_dropout(x)
        x = v.ln_pre(x)
        blocks = v.transformer.resblocks
        for blk in blocks[:-1]:
            x = self._run_block(blk, x)
        x_last = x
        x = self._run_block(blocks[-1], x)
        x_final = v.ln_post(x)
        x_proj = x_final @ v.proj if v.proj is not None else x_final
        return x_last, x_final, x_proj

    def _attnpool_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """open_clip's AttentionPool2d, but returning every token (B, HW+1, out), batch-first."""
        p = self.visual.attnpool
        x = x.flatten(2).permute(2, 0, 1)  # (HW, B, C)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + p.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=p.num_heads,
            q_proj_weight=p.q_proj.weight, k_proj_weight=p.k_proj.weight, v_proj_weight=p.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([p.q_proj.bias, p.k_proj.bias, p.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=p.c_proj.weight, out_proj_bias=p.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False)
        return x.transpose(0, 1)

    def _resnet_maps(self, images: torch.Tensor):
        v = self.visual
        x = v.stem(images.to(v.conv1.weight.dtype))
        x = v.layer1(x)
        x = v.layer2(x)
        x3 = v.layer3(x)
        x4 = v.layer4(x3)
        return x3, x4, self._attnpool_tokens(x4)

    def forward_tokens(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None,
                       viewids: Optional[torch.Tensor] = None):
        """The tower's three full outputs (the reference image encoder's return values).

        Args:
            images: (B, 3, H, W) normalised images of the training size.
            camids, viewids: (B,) ids for SIE (ignored without SIE).

        Returns:
            ViT: (x_last (B,T,C), x_final (B,T,C), x_proj (B,T,D)), T = 1 + grid tokens.
            ModifiedResNet: (layer3 map (B,C3,h,w), layer4 map (B,C4,h,w), attnpool tokens (B,hw+1,D)).
        """
        self._check_input(images)
        if self.is_vit:
            return self._vit_tokens(images, self.sie_embedding(camids, viewids))
        return self._resnet_maps(images)

    def forward(self, images: torch.Tensor, camids: Optional[torch.Tensor] = None,
                viewids: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Compute the three CLIP-ReID features (pre-BNNeck).

        Args:
            images: (B, 3, H, W) normalised images of the training size.
            camids, viewids: (B,) ids for SIE (ignored without SIE).

        Returns:
            dict with ``feat_last`` (B, C') [ViT: class token before the last block's ln_post
            path, i.e. after block L-1; RN: GAP(layer3)], ``feat`` (B, in_planes) and
            ``feat_proj`` (B, in_planes_proj).
        """
        a, b, c = self.forward_tokens(images, camids, viewids)
        if self.is_vit:
            return {"feat_last": a[:, 0], "feat": b[:, 0], "feat_proj": c[:, 0]}
        return {"feat_last": a.mean(dim=(2, 3)), "feat": b.mean(dim=(2, 3)), "feat_proj": c[:, 0]}

    def get_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Projected image feature WITHOUT SIE (what CLIP-ReID stage 1 caches per image).

        Runs in the module's current mode; wrap it in :meth:`eval_mode` to reproduce the
        reference's stage-1 extraction (CLIP sub-modules in eval mode, BN running stats).

        Args:
            images: (B, 3, H, W).

        Returns:
            (B, in_planes_proj).
        """
        self._check_input(images)
        if self.is_vit:
            return self._vit_tokens(images, None)[2][:, 0]
        return self._resnet_maps(images)[2][:, 0]

    @contextlib.contextmanager
    def eval_mode(self):
        """Context manager: put this module in eval mode and restore every sub-module's mode after."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            yield self
        finally:
            for m, mode in modes:
                m.training = mode


def build_clip_image_encoder(cfg, clip_model: Optional[nn.Module] = None) -> CLIPImageEncoder:
    """Build the ReID image encoder from the config (optionally from an already loaded CLIP).

    Args:
        cfg: the config (``MODEL.BACKBONE.*``, ``MODEL.BACKBONE.CLIP.*``, ``INPUT.SIZE_TRAIN``).
        clip_model: a CLIP model from :func:`load_clip_from_config` (CLIP-ReID reuses its text
            tower); loaded from the config when None.

    Returns:
        CLIPImageEncoder.
    """
    c = cfg.MODEL.BACKBONE.CLIP
    if clip_model is None:
        clip_model = load_clip_from_config(cfg)
    stride = tuple(c.STRIDE_SIZE)
    if len(stride) != 2:
        raise ValueError(f"MODEL.BACKBONE.CLIP.STRIDE_SIZE must be [sh, sw], got {list(c.STRIDE_SIZE)}.")
    return CLIPImageEncoder(
        clip_model.visual, tuple(cfg.INPUT.SIZE_TRAIN), stride,
        sie_camera=c.SIE_CAMERA, sie_view=c.SIE_VIEW, num_cameras=c.NUM_CAMERAS, num_views=c.NUM_VIEWS,
        sie_coe=c.SIE_COE, grad_checkpointing=c.GRAD_CHECKPOINTING,
    )


@BACKBONE_REGISTRY.register()
def build_clip_backbone(cfg) -> CLIPImageEncoder:
    """Registered backbone: an open_clip image tower adapted for ReID (see module docstring).

    Args:
        cfg: the config.

    Returns:
        CLIPImageEncoder.
    """
    return build_clip_image_encoder(cfg)
