"""The TransReID-style ViT backbone against torchvision's ViT and TransReID's definitions."""

import os

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from clipreid_plugin.config import get_cfg
from clipreid_plugin.modeling import build_model
from clipreid_plugin.modeling.backbones.vit import ViTBackbone, build_vit_backbone
from clipreid_plugin.utils.checkpoint import CheckpointError

TINY = dict(patch_size=16, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _torchvision_vit():
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(image_size=32, **TINY, num_classes=5).eval()


def test_square_input_matches_torchvision_class_token():
    tv = _torchvision_vit()
    ours = ViTBackbone((32, 32), **TINY).eval()
    ours.load_torchvision_state_dict(tv.state_dict())
    tv.heads = nn.Identity()  # torchvision's forward then returns the class token after the final LayerNorm
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).feature, tv(x), rtol=1e-5, atol=1e-5)


def test_non_square_input_resizes_the_position_embedding_bilinearly():
    tv = _torchvision_vit()
    ours = ViTBackbone((64, 32), **TINY)  # 4x2 grid from torchvision's 2x2
    ours.load_torchvision_state_dict(tv.state_dict())
    src = tv.encoder.pos_embedding[0]
    grid = src[1:].reshape(1, 2, 2, 16).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(4, 2), mode="bilinear", align_corners=False).permute(0, 2, 3, 1).reshape(8, 16)
    got = ours.encoder.pos_embedding[0]
    torch.testing.assert_close(got[0], src[0])
    torch.testing.assert_close(got[1:], want)
    assert ours(torch.randn(2, 3, 64, 32)).feature.shape == (2, 16)


def test_overlapping_patches_keep_the_patch_weights_and_grow_the_grid():
    tv = _torchvision_vit()
    ours = ViTBackbone((64, 32), **TINY, stride=(12, 12))
    ours.load_torchvision_state_dict(tv.state_dict())
    assert ours.grid == ((64 - 16) // 12 + 1, (32 - 16) // 12 + 1) == (5, 2)
    assert ours.encoder.pos_embedding.shape == (1, 11, 16)
    torch.testing.assert_close(ours.conv_proj.weight, tv.conv_proj.weight)
    assert ours.conv_proj.stride == (12, 12)
    assert ours(torch.randn(2, 3, 64, 32)).feature.shape == (2, 16)


def test_sie_adds_the_camera_embedding_to_every_token():
    torch.manual_seed(0)
    sie = ViTBackbone((32, 32), **TINY, num_cameras=3, sie_coe=3.0).eval()
    plain = ViTBackbone((32, 32), **TINY).eval()
    plain.load_state_dict({k: v for k, v in sie.state_dict().items() if k != "sie_embed"})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for cam in range(3):
            # TransReID: x = x + pos_embed + sie_xishu * sie_embed[camera]: the same as a shifted pos_embed
            plain.encoder.pos_embedding.copy_(sie.encoder.pos_embedding + 3.0 * sie.sie_embed[cam])
            torch.testing.assert_close(sie(x, torch.tensor([cam, cam])).feature, plain(x).feature, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(sie(x, torch.tensor([0, 0])).feature, sie(x, torch.tensor([1, 1])).feature)
    with pytest.raises(ValueError, match="outside 0..2"):
        sie(x, torch.tensor([0, 3]))


def _cfg(**kw):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "Market1501", "transreid_vit_b16.yml"))
    cfg.merge_from_list(["MODEL.BACKBONE.PRETRAIN", False, "MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", [64, 32],
                         "INPUT.SIZE_TEST", [64, 32]])
    for k, v in kw.items():
        cfg.merge_from_list([k.replace("__", "."), v])
    return cfg


def test_config_errors_name_the_key_to_fix(tmp_path):
    with pytest.raises(ValueError, match="NUM_CAMERAS"):
        build_vit_backbone(_cfg(MODEL__BACKBONE__VIT__SIE_CAMERA=True))
    with pytest.raises(ValueError, match="SIZE_TEST"):
        build_vit_backbone(_cfg(INPUT__SIZE_TEST=[32, 32]))
    with pytest.raises(ValueError, match="vit_b_16, vit_b_32"):
        build_vit_backbone(_cfg(MODEL__BACKBONE__VIT__ARCH="vit_x"))
    with pytest.raises(FileNotFoundError, match="vit_b_16-c867db91.pth"):
        build_vit_backbone(_cfg(MODEL__BACKBONE__PRETRAIN=True, MODEL__BACKBONE__PRETRAIN_PATH=str(tmp_path / "no.pth")))
    small = tmp_path / "tiny_vit.pth"
    torch.save(_torchvision_vit().state_dict(), small)
    with pytest.raises(CheckpointError, match="does not fit this ViT"):
        build_vit_backbone(_cfg(MODEL__BACKBONE__PRETRAIN=True, MODEL__BACKBONE__PRETRAIN_PATH=str(small)))


def test_transreid_config_builds_vit_b16_and_trains_with_sie():
    cfg = _cfg(MODEL__BACKBONE__VIT__SIE_CAMERA=True, MODEL__BACKBONE__VIT__NUM_CAMERAS=4,
               MODEL__HEADS__NUM_CLASSES=3, MODEL__BACKBONE__VIT__STRIDE_SIZE=[12, 12])
    model = build_model(cfg)
    tv = torchvision.models.vit_b_16()
    # torchvision's count, minus the ImageNet classifier and the 14x14 grid, plus a 5x2 grid and the SIE table
    want = sum(p.numel() for p in tv.parameters()) - sum(p.numel() for p in tv.heads.parameters())
    want += (10 - 196) * 768 + 4 * 768
    assert sum(p.numel() for p in model.backbone.parameters()) == want
    batch = {"images": torch.randn(4, 3, 64, 32), "targets": torch.tensor([0, 0, 1, 1]),
             "camids": torch.tensor([0, 1, 2, 3]), "viewids": torch.zeros(4, dtype=torch.long)}
    losses = model.train()(batch)
    assert set(losses) == {"loss_cls", "loss_triplet"}
    sum(losses.values()).backward()
    assert model.backbone.sie_embed.grad is not None and model.backbone.sie_embed.grad.abs().sum() > 0
    assert model.eval()(batch).shape == (4, 768)
