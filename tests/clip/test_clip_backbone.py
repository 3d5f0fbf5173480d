"""CLIP image encoder as a ReID backbone: reference outputs, stock CLIP equivalence, SIE, OLP."""

import copy

import pytest
import torch

from clipreid_plugin.config import get_cfg
from clipreid_plugin.plugins.clipreid import load_clip
from clipreid_plugin.modeling.backbones import BACKBONE_REGISTRY
from clipreid_plugin.modeling.backbones import eval_mode
from clipreid_plugin.plugins.clipreid.backbone import CLIPImageEncoder, build_clip_backbone

from clip_cfgs import tiny_vit_cfg

TOL = 1e-5


def _max_err(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("case_name", ["vit_case", "rn_case"])
def test_encoder_outputs_match_reference(request, case_model, case_name):
    case = request.getfixturevalue(case_name)
    model, _ = case_model(case)
    model.eval()
    images, out = case["inputs"]["images"], case["outputs"]
    with torch.no_grad():
        ours = model.backbone.forward_tokens(images)
        ref = list(out["eval_image_encoder_outputs"])
        if not model.backbone.is_vit:
            ref[2] = ref[2].transpose(0, 1)  # the reference's attention pool is sequence-first
        for a, b in zip(ours, ref):
            assert a.shape == b.shape and _max_err(a, b) <= TOL
        assert _max_err(model.backbone(images).projected, out["get_image_features"]) <= TOL
    assert (model.backbone.out_features, model.backbone.proj_features) == (case["meta"]["in_planes"],
                                                                         case["meta"]["in_planes_proj"])


def test_rn_stage1_features_need_eval_mode(rn_case, case_model):
    """The reference extracts stage-1 features with CLIP in eval mode (BN running statistics)."""
    model, _ = case_model(rn_case)
    model.train()
    enc = model.backbone
    images, ref = rn_case["inputs"]["images"], rn_case["outputs"]["get_image_features"]
    stats = enc.visual.bn1.running_mean.clone()
    with torch.no_grad(), eval_mode(enc):
        assert _max_err(enc(images).projected, ref) <= TOL
    assert enc.training and enc.visual.layer1.training  # modes restored
    assert torch.equal(enc.visual.bn1.running_mean, stats)  # statistics untouched
    with torch.no_grad():
        assert _max_err(enc(images).projected, ref) > 1e-3  # train-mode BN differs


def test_equals_stock_clip_at_224(reference_dir):
    """CLIPREID_SPEC.md 12.4: without resizing, the projected class token is CLIP's image embedding."""
    cfg = tiny_vit_cfg(reference_dir)
    cfg.INPUT.SIZE_TRAIN = [224, 224]
    clip = load_clip(weights=cfg.MODEL.BACKBONE.PRETRAIN_PATH)
    enc = CLIPImageEncoder(copy.deepcopy(clip).visual, (224, 224)).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = clip.encode_image(x)
        assert _max_err(enc(x).projected, expected) <= TOL
        assert _max_err(enc(x).projected, expected) <= TOL


def test_registered_and_overlapping_patches(reference_dir):
    cfg = tiny_vit_cfg(reference_dir, STRIDE_SIZE=[12, 12])
    enc = BACKBONE_REGISTRY.get("build_clip_backbone")(cfg)
    assert isinstance(enc, CLIPImageEncoder)
    assert enc.visual.conv1.stride == (12, 12) and enc.grid_size == (21, 10)
    with torch.no_grad():
        last, final, proj = enc.eval().forward_tokens(torch.randn(1, 3, 256, 128))
    assert last.shape == (1, 211, 128) and proj.shape == (1, 211, 32)
    with pytest.raises(ValueError, match=r"\(256, 256\).*\(256, 128\).*SIZE_TEST"):
        enc(torch.randn(1, 3, 256, 256))


def test_sie_adds_to_class_token_only(reference_dir):
    """SIE = class_embedding + SIE_COE * cv_embed[cam * num_views + view] (spec 2.3, 2.5)."""
    cfg = tiny_vit_cfg(reference_dir, SIE_CAMERA=True, SIE_VIEW=True, NUM_CAMERAS=3, NUM_VIEWS=2, SIE_COE=1.5)
    cfg.INPUT.SIZE_TRAIN = [64, 32]
    enc = build_clip_backbone(cfg).eval()
    assert enc.cv_embed.shape == (6, 128)
    plain_cfg = tiny_vit_cfg(reference_dir)
    plain_cfg.INPUT.SIZE_TRAIN = [64, 32]
    plain = build_clip_backbone(plain_cfg).eval()
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    cam, view = torch.tensor([2, 2]), torch.tensor([1, 1])
    with torch.no_grad():
        plain.visual.class_embedding += 1.5 * enc.cv_embed[2 * 2 + 1]
        for a, b in zip(enc.forward_tokens(x, cam, view), plain.forward_tokens(x)):
            assert _max_err(a, b) <= TOL
        # stage 1 features never get SIE
        plain.visual.class_embedding -= 1.5 * enc.cv_embed[2 * 2 + 1]
        assert _max_err(enc(x).projected, plain(x).projected) <= TOL
        with pytest.raises(ValueError, match=r"camera id.*0\.\.2.*NUM_CAMERAS"):
            enc(x, torch.tensor([0, 3]), view)
    with pytest.raises(ValueError, match="NUM_CAMERAS"):
        build_clip_backbone(tiny_vit_cfg(reference_dir, SIE_CAMERA=True))


def test_grad_checkpointing_same_gradients(reference_dir):
    cfg = tiny_vit_cfg(reference_dir, GRAD_CHECKPOINTING=True)
    cfg.INPUT.SIZE_TRAIN = [64, 32]  # small grid: the test is about recomputation, not size
    enc = build_clip_backbone(cfg).train()
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(2))
    grads = []
    for ckpt in (True, False):
        enc.set_grad_checkpointing(ckpt)
        enc.zero_grad()
        out = enc(x)
        (out.intermediate.sum() + out.feature.pow(2).sum() + out.projected.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters()})
    for name, g in grads[0].items():
        assert _max_err(g, grads[1][name]) <= 1e-6 * max(1.0, g.abs().max().item()), name


def test_other_vit_patch_sizes_build(tiny_openclip_names):
    """Any open_clip ViT builds (ViT-L-14-like patch 14): the grid follows the real patch size."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.CLIP.MODEL_NAME = "cliptest-vit-p14"
    cfg.MODEL.BACKBONE.CLIP.STRIDE_SIZE = [14, 14]
    enc = build_clip_backbone(cfg).eval()
    assert enc.grid_size == (18, 9) and enc.visual.positional_embedding.shape == (1 + 18 * 9, 64)
    with torch.no_grad():
        out = enc(torch.randn(2, 3, 256, 128))
    assert out.feature.shape == (2, 64) and out.projected.shape == (2, 16)


def test_pretrain_without_source_is_explained():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.PRETRAIN = True
    with pytest.raises(ValueError, match="PRETRAIN_PATH.*PRETRAINED_TAG"):
        build_clip_backbone(cfg)
