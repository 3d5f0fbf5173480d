"""open_clip image towers (ViT or ModifiedResNet) adapted for ReID, as CLIP-ReID adapts them.

Adaptations (CLIPREID_SPEC.md 2.2-2.4):

* non-square input: the positional embedding is resized bilinearly (class row kept) to the
  patch grid of ``INPUT.SIZE_TRAIN``; for ModifiedResNet the attention-pool embedding is;
* overlapping patches: the ViT patch conv gets ``CLIPREID.BACKBONE.STRIDE_SIZE``;
* ModifiedResNet layer4 runs with stride 1 (a 16x8 map at 256x128, no weight change);
* SIE: a learned camera/view embedding, times ``SIE_COE``, added to the class token only;
* three features per image, returned as the toolkit's :class:`BackboneOutput`: ViT =
  ``intermediate`` class token after the second-to-last block (no ln_post), ``feature`` after
  ln_post, ``projected``; ModifiedResNet = ``intermediate`` layer3 map, ``feature`` layer4 map
  (the meta-architecture pools them), ``projected`` attention-pool token 0.

The forward is written here, batch-first (open_clip 3.x transformers are batch-first; the
``permute(1, 0, 2)`` of OpenAI/CLIP-ReID code would be silently wrong, PITFALLS 2-3). The
visual tower keeps open_clip's parameter names under ``self.visual`` (``visual.conv1.weight``,
``visual.transformer.resblocks.0...``), which are OpenAI's names too.
"""

import contextlib
import logging
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from clipreid_plugin.config import configurable
from clipreid_plugin.modeling import (
    BACKBONE_REGISTRY,
    Backbone,
    BackboneOutput,
    check_ids_in_range,
    patch_grid,
    resize_pos_embed,
)
from clipreid_plugin.utils.errors import ConfigError

from .clip_weights import infer_model_config_from_reid_checkpoint, load_clip

__all__ = ["CLIPImageEncoder", "build_clip_backbone", "load_clip_from_config", "shared_clip_models"]

logger = logging.getLogger(__name__)

# While a model is being built (shared_clip_models), CLIP models loaded with the same settings
# are one object: the image backbone and the text head then share one load of the weights file.
_SHARED: Optional[Dict[tuple, nn.Module]] = None


@contextlib.contextmanager
def shared_clip_models() -> Iterator[None]:
    """Within this context, :func:`load_clip_from_config` returns one model per distinct source."""
    global _SHARED
    outer, _SHARED = _SHARED, ({} if _SHARED is None else _SHARED)
    try:
        yield
    finally:
        _SHARED = outer


def _quick_gelu(value: str) -> Optional[bool]:
    """``CLIPREID.BACKBONE.QUICK_GELU`` checked: None ("auto"), True ("on") or False ("off")."""
    key = str(value).lower()
    if key not in ("auto", "on", "off"):
        raise ConfigError(f"CLIPREID.BACKBONE.QUICK_GELU is {value!r}; valid: 'auto', 'on', 'off'.")
    return {"auto": None, "on": True, "off": False}[key]


def _stride_size(value) -> Tuple[int, ...]:
    """``CLIPREID.BACKBONE.STRIDE_SIZE`` checked: (sh, sw), each >= 1."""
    stride = tuple(value)
    if len(stride) != 2 or min(stride) < 1:
        raise ConfigError(f"CLIPREID.BACKBONE.STRIDE_SIZE must be [sh, sw] >= 1, got {list(value)}.")
    return stride


def load_clip_from_config(cfg, weights: Optional[str] = None):
    """Build the whole CLIP model (both towers) from ``MODEL.BACKBONE.*`` keys.

    ``MODEL.BACKBONE.PRETRAIN`` True loads ``PRETRAIN_PATH`` (a local OpenAI or open_clip file)
    or, when that is empty, ``CLIPREID.BACKBONE.PRETRAINED_TAG``; False gives random weights
    (overwritten by a full checkpoint in ``MODEL.WEIGHTS``). With no
    ``CLIPREID.BACKBONE.MODEL_NAME`` and no file to read the architecture from, it comes from
    the shapes of ``MODEL.WEIGHTS`` (this toolkit's or the reference's CLIP-ReID checkpoint), so
    a checkpoint is usable without the CLIP file it was trained from.

    Args:
        cfg: the config.
        weights: load this file instead of what ``MODEL.BACKBONE.PRETRAIN*`` says ("" = the
            pretrained tag or random init); used for a text tower of its own.

    Returns:
        open_clip CLIP model in float32 (see :func:`load_clip`); the same object for the same
        source inside :func:`shared_clip_models`.
    """
    b = cfg.MODEL.BACKBONE
    c = cfg.CLIPREID.BACKBONE
    qg = _quick_gelu(c.QUICK_GELU)
    if weights is None:
        if b.PRETRAIN and not (b.PRETRAIN_PATH or c.PRETRAINED_TAG):
            raise ConfigError(
                "MODEL.BACKBONE.PRETRAIN is True but neither MODEL.BACKBONE.PRETRAIN_PATH (a local CLIP "
                "weights file, e.g. ~/.cache/clip/ViT-B-16.pt) nor CLIPREID.BACKBONE.PRETRAINED_TAG is set."
            )
        weights = b.PRETRAIN_PATH if b.PRETRAIN else ""
    # no file: the tag (when pretrained weights are wanted at all); a text tower of its own likewise
    tag = c.PRETRAINED_TAG if b.PRETRAIN and not weights else ""
    from_checkpoint = not (c.MODEL_NAME or weights or tag) and bool(cfg.MODEL.WEIGHTS)
    key = (c.MODEL_NAME, weights, tag, qg, cfg.MODEL.WEIGHTS if from_checkpoint else "")
    if _SHARED is not None and key in _SHARED:
        return _SHARED[key]
    follow = bool(cfg.MODEL.WEIGHTS)  # the checkpoint replaces random weights: its load is what to report
    if from_checkpoint:
        model = load_clip(quick_gelu=qg, model_cfg=infer_model_config_from_reid_checkpoint(cfg.MODEL.WEIGHTS),
                          weights_follow=follow)
    else:
        model = load_clip(c.MODEL_NAME, weights=weights, pretrained_tag=tag, quick_gelu=qg, weights_follow=follow)
    if _SHARED is not None:
        _SHARED[key] = model
    return model


class CLIPImageEncoder(Backbone):
    """A CLIP image tower producing the three CLIP-ReID features.

    Attributes:
        visual: the open_clip tower (``VisionTransformer`` or ``ModifiedResNet``), adapted.
        cv_embed: SIE table (num_cameras*num_views | num_cameras | num_views, width) or None.
        is_vit: whether the tower is a ViT.
        out_features: width of ``feature`` (768 ViT-B/16, 2048 RN50).
        proj_features: width of ``projected`` (512 ViT-B/16, 1024 RN50).
        uses_camids / uses_viewids: SIE on cameras / views.

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

        self.visual = visual
        self.image_size = tuple(int(s) for s in image_size)
        if isinstance(visual, VisionTransformer):
            self.is_vit = True
            self._adapt_vit(tuple(int(s) for s in stride))
            width = visual.conv1.out_channels
            self.out_features = width
            self.proj_features = visual.proj.shape[1] if visual.proj is not None else width
        elif isinstance(visual, ModifiedResNet):
            self.is_vit = False
            self.prefers_channels_last = True
            self._adapt_resnet()
            self.out_features = visual.attnpool.k_proj.in_features
            self.proj_features = visual.attnpool.c_proj.out_features
        else:
            raise ConfigError(
                f"Unsupported CLIP image tower {type(visual).__name__}: only open_clip's VisionTransformer "
                f"and ModifiedResNet towers (ViT-*/RN* models without timm/HF towers) can be ReID backbones."
            )

        # SIE (spec 2.5): one row per camera, per view, or per (camera, view) pair.
        self.uses_camids, self.uses_viewids, self.sie_coe = bool(sie_camera), bool(sie_view), float(sie_coe)
        self.num_cameras, self.num_views = int(num_cameras), int(num_views)
        self.cv_embed = None
        if (self.uses_camids or self.uses_viewids) and not self.is_vit:
            # The reference creates the table for RN50 but never uses it.
            logger.warning("SIE (CLIPREID.BACKBONE.SIE_CAMERA/SIE_VIEW) is ignored for ModifiedResNet towers.")
            self.uses_camids = self.uses_viewids = False
        if self.uses_camids and self.num_cameras <= 0:
            raise ConfigError("SIE_CAMERA needs CLIPREID.BACKBONE.NUM_CAMERAS > 0 (the trainer fills it from the "
                              "training set; set it by hand when building the model yourself).")
        if self.uses_viewids and self.num_views <= 0:
            raise ConfigError("SIE_VIEW needs CLIPREID.BACKBONE.NUM_VIEWS > 0 (the trainer fills it from the "
                              "training set; set it by hand when building the model yourself).")
        rows = (self.num_cameras if self.uses_camids else 1) * (self.num_views if self.uses_viewids else 1)
        if self.uses_camids or self.uses_viewids:
            self.cv_embed = nn.Parameter(torch.zeros(rows, self.out_features))
            # timm trunc_normal_(std=.02) as the reference: bounds +-2 absolute, i.e. a plain normal.
            nn.init.trunc_normal_(self.cv_embed, std=0.02, a=-2.0, b=2.0)

        self.grad_checkpointing = False
        self.set_grad_checkpointing(grad_checkpointing)

    # ----------------------------------------------------------------------------- adaptation
    def _adapt_vit(self, stride: Tuple[int, int]) -> None:
        v = self.visual
        if v.attn_pool is not None or getattr(v, "pool_type", "tok") != "tok":
            raise ConfigError("This ViT tower pools without a class token (attentional/avg pool); CLIP-ReID "
                              "features need the class token.")
        patch = v.conv1.kernel_size
        if patch[0] != patch[1]:
            raise ConfigError(f"Non-square patches {patch} are not supported.")
        if stride[0] > patch[0] or stride[1] > patch[1]:
            logger.warning("CLIPREID.BACKBONE.STRIDE_SIZE %s is larger than the %dx%d patches: pixels between "
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
            Both None: no side information (CLIP-ReID's stage-1 features).

        Returns:
            (B, width) tensor or None.
        """
        if self.cv_embed is None or (camids is None and viewids is None):
            return None
        if self.uses_camids and camids is None or self.uses_viewids and viewids is None:
            raise ValueError("SIE uses both camera and view ids, but only one of them was given.")
        if self.uses_camids and self.uses_viewids:
            idx = self._check_ids(camids, self.num_cameras, "camera") * self.num_views + \
                self._check_ids(viewids, self.num_views, "view")
        elif self.uses_camids:
            idx = self._check_ids(camids, self.num_cameras, "camera")
        else:
            idx = self._check_ids(viewids, self.num_views, "view")
        return self.sie_coe * self.cv_embed[idx]

    def _check_ids(self, ids: torch.Tensor, n: int, what: str) -> torch.Tensor:
        check_ids_in_range(ids, n, what, f"the SIE table was sized for {n} {what}s (CLIPREID.BACKBONE.NUM_"
                                         f"{what.upper()}S; the evaluation set must use the training set's "
                                         f"{what} ids).")
        return ids.to(self.cv_embed.device, non_blocking=True).long()

    # ----------------------------------------------------------------------------- forward
    def _check_input(self, images: torch.Tensor) -> None:
        if tuple(images.shape[-2:]) != self.image_size:
            raise ConfigError(
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
                viewids: Optional[torch.Tensor] = None) -> BackboneOutput:
        """Compute the three CLIP-ReID features (pre-BNNeck).

        Args:
            images: (B, 3, H, W) normalised images of the training size.
            camids, viewids: (B,) ids for SIE; None = no side information.

        Returns:
            BackboneOutput: ViT: ``feature`` (B, out_features) class token after ln_post,
            ``intermediate`` (B, out_features) class token after block L-1, ``projected``
            (B, proj_features). ModifiedResNet: ``feature`` the layer4 map, ``intermediate``
            the layer3 map, ``projected`` attention-pool token 0.
        """
        a, b, c = self.forward_tokens(images, camids, viewids)
        if self.is_vit:
            return BackboneOutput(feature=b[:, 0], intermediate=a[:, 0], projected=c[:, 0])
        return BackboneOutput(feature=b, intermediate=a, projected=c[:, 0])

    def describe(self) -> str:
        """Returns: "CLIP " + the architecture built: "ViT-B/16", "RN50", or its sizes for other towers."""
        v = self.visual
        if self.is_vit:
            patch, layers = v.conv1.kernel_size[0], len(v.transformer.resblocks)
            size = {(768, 12): "B", (1024, 24): "L", (1280, 32): "H"}.get((self.out_features, layers))
            arch = f"ViT-{size}/{patch}" if size else f"ViT w{self.out_features} L{layers} p{patch}"
        else:
            layers = tuple(len(getattr(v, f"layer{i}")) for i in range(1, 5))
            stem = v.layer1[0].conv1.in_channels
            known = {((3, 4, 6, 3), 64): "RN50", ((3, 4, 23, 3), 64): "RN101", ((4, 6, 10, 6), 80): "RN50x4"}
            arch = known.get((layers, stem)) or f"ModifiedResNet {'-'.join(map(str, layers))} w{stem}"
        return f"CLIP {arch}"


def _clip_backbone_args(cfg) -> dict:
    """``build_clip_backbone``'s arguments: the image tower of the CLIP model the config names
    (``MODEL.BACKBONE.{PRETRAIN, PRETRAIN_PATH}``, ``CLIPREID.BACKBONE.*``; inside
    :func:`shared_clip_models` the load is shared with a text head of the same source) and
    ``INPUT.SIZE_TRAIN``."""
    c = cfg.CLIPREID.BACKBONE
    return {"visual": load_clip_from_config(cfg).visual, "image_size": tuple(cfg.INPUT.SIZE_TRAIN),
            "stride": _stride_size(c.STRIDE_SIZE), "sie_camera": c.SIE_CAMERA, "sie_view": c.SIE_VIEW,
            "num_cameras": c.NUM_CAMERAS, "num_views": c.NUM_VIEWS, "sie_coe": c.SIE_COE,
            "grad_checkpointing": c.GRAD_CHECKPOINTING}


@BACKBONE_REGISTRY.register()
@configurable(from_config=_clip_backbone_args)
def build_clip_backbone(*, visual: nn.Module, image_size: Tuple[int, int], **options) -> CLIPImageEncoder:
    """Registered backbone: an open_clip image tower adapted for ReID (see module docstring),
    from a config or from plain arguments (an open_clip ``visual`` tower, the input size and
    :class:`CLIPImageEncoder`'s options).

    Returns:
        CLIPImageEncoder.
    """
    return CLIPImageEncoder(visual, image_size, **options)
