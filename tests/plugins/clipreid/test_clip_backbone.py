"""CLIP image encoder as a ReID backbone (tiny CLIP built locally): stock CLIP equivalence,
eval-mode stage-1 features, overlapping patches, SIE, gradient checkpointing, other patch sizes."""

import copy

import pytest
import torch

from clipreid_plugin.config import get_cfg
from clipreid_plugin.modeling.backbones import BACKBONE_REGISTRY, eval_mode
from clipreid_plugin.plugins.clipreid import load_clip
from clipreid_plugin.plugins.clipreid.backbone import CLIPImageEncoder, build_clip_backbone

from tiny_clip import SIZE, TINY_VIT, max_err, tiny_clip_cfg

TOL = 1e-5


def test_equals_stock_clip_at_224():
    """CLIPREID_SPEC.md 12.4: without resizing, the projected class token is CLIP's image embedding
    (open_clip's own ``encode_image``)."""
    torch.manual_seed(0)
    clip = load_clip(TINY_VIT)
    enc = CLIPImageEncoder(copy.deepcopy(clip).visual, (224, 224)).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = clip.encode_image(x)
        assert max_err(enc(x).projected, expected) <= TOL


def test_rn_stage1_features_need_eval_mode():
    """The reference extracts stage-1 features with CLIP in eval mode (BN running statistics):
    ``eval_mode`` gives the eval-mode output, restores the modes and leaves the statistics alone."""
    torch.manual_seed(0)
    enc = build_clip_backbone(tiny_clip_cfg("rn")).train()
    images = torch.randn(4, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = copy.deepcopy(enc).eval()(images).projected
    stats = enc.visual.bn1.running_mean.clone()
    with torch.no_grad(), eval_mode(enc):
        assert max_err(enc(images).projected, expected) <= 1e-6
    assert enc.training and enc.visual.layer1.training  # modes restored
    assert torch.equal(enc.visual.bn1.running_mean, stats)  # statistics untouched
    with torch.no_grad():
        assert max_err(enc(images).projected, expected) > 1e-3  # train-mode BN differs


def test_registered_and_overlapping_patches():
    """STRIDE_SIZE 12 on 16x16 patches: (256 - 16) // 12 + 1 = 21 rows, (128 - 16) // 12 + 1 = 10
    columns, 1 + 210 tokens; any other input size is refused with the keys to fix."""
    cfg = tiny_clip_cfg("vit", size=(256, 128), STRIDE_SIZE=[12, 12])
    enc = BACKBONE_REGISTRY.get("build_clip_backbone")(cfg)
    assert isinstance(enc, CLIPImageEncoder)
    assert enc.visual.conv1.stride == (12, 12) and enc.grid_size == (21, 10)
    with torch.no_grad():
        last, final, proj = enc.eval().forward_tokens(torch.randn(1, 3, 256, 128))
    assert last.shape == final.shape == (1, 211, 128) and proj.shape == (1, 211, 64)
    with pytest.raises(ValueError, match=r"\(256, 256\).*\(256, 128\).*SIZE_TEST"):
        enc(torch.randn(1, 3, 256, 256))


def test_sie_adds_to_class_token_only():
    """SIE = class_embedding + SIE_COE * cv_embed[cam * num_views + view] (spec 2.3, 2.5): the SIE
    encoder equals a plain one whose class embedding has that row added; stage-1 features (no ids)
    get no SIE; ids outside the table and a missing camera count are explained."""
    torch.manual_seed(0)
    enc = build_clip_backbone(tiny_clip_cfg("vit", SIE_CAMERA=True, SIE_VIEW=True, NUM_CAMERAS=3, NUM_VIEWS=2,
                                            SIE_COE=1.5)).eval()
    assert enc.cv_embed.shape == (6, 128)
    plain = build_clip_backbone(tiny_clip_cfg("vit")).eval()
    plain.load_state_dict({k: v for k, v in enc.state_dict().items() if k != "cv_embed"})
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    cam, view = torch.tensor([2, 2]), torch.tensor([1, 1])
    with torch.no_grad():
        plain.visual.class_embedding += 1.5 * enc.cv_embed[2 * 2 + 1]
        for a, b in zip(enc.forward_tokens(x, cam, view), plain.forward_tokens(x)):
            assert max_err(a, b) <= TOL
        plain.visual.class_embedding -= 1.5 * enc.cv_embed[2 * 2 + 1]
        assert max_err(enc(x).projected, plain(x).projected) <= TOL  # stage 1 features never get SIE
        with pytest.raises(ValueError, match=r"camera id.*0\.\.2.*NUM_CAMERAS"):
            enc(x, torch.tensor([0, 3]), view)
    with pytest.raises(ValueError, match="NUM_CAMERAS"):
        build_clip_backbone(tiny_clip_cfg("vit", SIE_CAMERA=True))


def test_grad_checkpointing_same_gradients():
    """Recomputing the blocks in backward gives the gradients of the plain backward."""
    enc = build_clip_backbone(tiny_clip_cfg("vit", GRAD_CHECKPOINTING=True)).train()
    assert enc.grad_checkpointing
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(2))
    grads = []
    for ckpt in (True, False):
        enc.set_grad_checkpointing(ckpt)
        enc.zero_grad()
        out = enc(x)
        (out.intermediate.sum() + out.feature.pow(2).sum() + out.projected.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters()})
    for name, g in grads[0].items():
        assert max_err(g, grads[1][name]) <= 1e-6 * max(1.0, g.abs().max().item()), name


def test_other_vit_patch_sizes_build(tiny_openclip_names):
    """Any open_clip ViT builds (ViT-L-14-like patch 14): the grid follows the real patch size,
    (256 - 14) // 14 + 1 = 18 by (128 - 14) // 14 + 1 = 9."""
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    cfg.CLIPREID.BACKBONE.MODEL_NAME = "cliptest-vit-p14"
    cfg.CLIPREID.BACKBONE.STRIDE_SIZE = [14, 14]
    enc = build_clip_backbone(cfg).eval()
    assert enc.grid_size == (18, 9) and enc.visual.positional_embedding.shape == (1 + 18 * 9, 64)
    with torch.no_grad():
        out = enc(torch.randn(2, 3, 256, 128))
    assert out.feature.shape == (2, 64) and out.projected.shape == (2, 16)


def test_pretrain_without_source_is_explained():
    """PRETRAIN True with neither a weights file nor a pretrained tag names both keys."""
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    cfg.MODEL.BACKBONE.PRETRAIN = True
    with pytest.raises(ValueError, match="PRETRAIN_PATH.*PRETRAINED_TAG"):
        build_clip_backbone(cfg)


@pytest.mark.parametrize("key, value, message", [
    ("STRIDE_SIZE", [0, 16], r"STRIDE_SIZE must be \[sh, sw\] >= 1, got \[0, 16\]"),
    ("STRIDE_SIZE", [16], r"STRIDE_SIZE must be \[sh, sw\] >= 1, got \[16\]"),
    ("QUICK_GELU", "yes", r"QUICK_GELU is 'yes'; valid: 'auto', 'on', 'off'"),
])
def test_config_check_and_builder_give_one_message(key, value, message):
    """The plugin's config check and the backbone builder use the same validators."""
    from clipreid_plugin.plugins.clipreid.config import check_clipreid_config

    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    setattr(cfg.CLIPREID.BACKBONE, key, value)
    with pytest.raises(ValueError, match=message):
        check_clipreid_config(cfg, False)
    with pytest.raises(ValueError, match=message):
        build_clip_backbone(cfg)
