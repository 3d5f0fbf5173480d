"""CLIPBaseline as the trainer uses it (batch dict in, weighted losses / embedding out), and its configs."""

import glob
import os

import pytest
import torch

from clipreid_plugin.config import get_cfg
from clipreid_plugin.modeling.meta_arch import META_ARCH_REGISTRY
from clipreid_plugin.plugins.clipreid.clip_baseline import CLIPBaseline

from clip_cfgs import tiny_vit_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "projects", "CLIPReID", "configs")


def _tiny_cfg(reference_dir, **clip_keys):
    cfg = tiny_vit_cfg(reference_dir, **clip_keys)
    cfg.MODEL.META_ARCHITECTURE = "CLIPBaseline"
    cfg.INPUT.SIZE_TRAIN = [64, 32]
    cfg.MODEL.HEADS.NUM_CLASSES = 3
    return cfg


def _batch():
    g = torch.Generator().manual_seed(0)
    return {"images": torch.randn(6, 3, 64, 32, generator=g), "targets": torch.tensor([0, 0, 1, 1, 2, 2]),
            "camids": torch.tensor([0, 1, 0, 1, 0, 1]), "viewids": torch.zeros(6, dtype=torch.long),
            "img_paths": [""] * 6}


@pytest.mark.parametrize("neck_feat", ["before", "after"])
def test_train_and_eval_contract(reference_dir, neck_feat):
    assert META_ARCH_REGISTRY.get("CLIPBaseline") is CLIPBaseline
    cfg = _tiny_cfg(reference_dir)
    cfg.MODEL.HEADS.NECK_FEAT = neck_feat
    model = CLIPBaseline(cfg).train()
    losses = model(_batch())
    assert set(losses) == {"loss_cls", "loss_triplet"} and all(v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.neck.bn.bias.grad is None and model.neck_proj.bn.bias.grad is None  # BNNeck bias frozen
    model.eval()
    with torch.no_grad():
        emb = model(_batch())
        out = model.extract_features(_batch()["images"])
    keys = ("feat", "feat_proj") if neck_feat == "before" else ("bn_feat", "bn_feat_proj")
    assert emb.shape == (6, 128 + 32)
    assert torch.equal(emb, torch.cat([out[keys[0]], out[keys[1]]], 1))


def test_sie_ids_come_from_the_batch(reference_dir):
    model = CLIPBaseline(_tiny_cfg(reference_dir, SIE_CAMERA=True, NUM_CAMERAS=2)).eval()
    batch = _batch()
    with torch.no_grad():
        emb = model(batch)
        swapped = model(dict(batch, camids=1 - batch["camids"]))
        expected = model.extract_features(batch["images"], batch["camids"])
    assert torch.equal(emb, torch.cat([expected["bn_feat"], expected["bn_feat_proj"]], 1))
    assert not torch.allclose(emb, swapped)  # the camera embedding is used


def test_config_errors(reference_dir):
    cfg = _tiny_cfg(reference_dir)
    cfg.MODEL.HEADS.NUM_CLASSES = 0
    model = CLIPBaseline(cfg).train()
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        model(_batch())
    cfg.MODEL.HEADS.NECK_FEAT = "middle"
    with pytest.raises(ValueError, match="NECK_FEAT"):
        CLIPBaseline(cfg)


# CLIPREID_SPEC.md 1.4, baseline rows: (size, label smoothing, BASE_LR, WD, warmup factor, steps, epochs)
VIT = dict(model="ViT-B-16", lr=5e-6, wd=1e-4, wf=0.1, steps=(30, 50), epochs=60, mean=[0.5] * 3, std=[0.5] * 3)
CNN = dict(model="RN50", lr=3.5e-4, wd=5e-4, wf=0.01, steps=(40, 70), epochs=120,
           mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
DATASETS = {"market1501": ("Market1501", [256, 128]), "msmt17": ("MSMT17", [256, 128]),
            "dukemtmc": ("DukeMTMC", [256, 128]), "occ_duke": ("OccludedDuke", [256, 128]),
            "veri": ("VeRi", [256, 256]), "vehicleid": ("VehicleID", [256, 256])}


@pytest.mark.parametrize("folder", sorted(DATASETS))
@pytest.mark.parametrize("fname", ["vit_base", "cnn_base"])
def test_baseline_configs_match_the_reference(folder, fname):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, folder, fname + ".yml"))
    exp = dict(VIT if fname == "vit_base" else CNN)
    if folder == "vehicleid" and fname == "vit_base":
        exp["lr"] = 5e-5
    name, size = DATASETS[folder]
    m, s = cfg.MODEL, cfg.SOLVER
    assert m.META_ARCHITECTURE == "CLIPBaseline" and m.BACKBONE.NAME == "build_clip_backbone"
    assert m.BACKBONE.CLIP.MODEL_NAME == exp["model"] and m.BACKBONE.PRETRAIN
    assert list(m.BACKBONE.CLIP.STRIDE_SIZE) == [16, 16] and not m.BACKBONE.CLIP.SIE_CAMERA
    assert m.HEADS.NECK_FEAT == "before"
    assert m.LOSSES.CE.EPSILON == (0.0 if folder == "vehicleid" else 0.1)
    assert (m.LOSSES.CE.SCALE, m.LOSSES.TRI.SCALE, m.LOSSES.TRI.MARGIN) == (1.0, 1.0, 0.3)
    assert list(cfg.INPUT.SIZE_TRAIN) == size and list(cfg.INPUT.SIZE_TEST) == size
    assert list(cfg.INPUT.PIXEL_MEAN) == exp["mean"] and list(cfg.INPUT.PIXEL_STD) == exp["std"]
    assert tuple(cfg.DATASETS.NAMES) == (name,) and tuple(cfg.DATASETS.TESTS) == (name,)
    assert cfg.DATALOADER.NUM_INSTANCE == 4 and s.IMS_PER_BATCH == 64
    assert s.OPTIMIZER_NAME == "Adam" and s.BIAS_LR_FACTOR == 2
    assert s.BASE_LR == pytest.approx(exp["lr"]) and s.WEIGHT_DECAY == s.WEIGHT_DECAY_BIAS == exp["wd"]
    assert s.WARMUP_FACTOR == exp["wf"] and s.WARMUP_EPOCHS == 10 and s.GAMMA == 0.1
    assert tuple(s.STEPS_EPOCHS) == exp["steps"] and s.MAX_EPOCHS == exp["epochs"]
    assert s.CHECKPOINT_PERIOD == cfg.TEST.EVAL_PERIOD == exp["epochs"]
    assert cfg.TEST.FEAT_NORM and cfg.TEST.METRIC == "euclidean"


def test_every_baseline_config_is_covered():
    files = sorted(glob.glob(os.path.join(CONFIGS, "*", "*_base.yml")))
    assert len(files) == 12


@pytest.mark.parametrize("name, stride, sie_cams, encoder_params, total_params, n_keys", [
    ("ViT-B-16", 16, 0, 86_140_416, 87_104_256, 164),
    ("RN50", 16, 0, 38_478_688, 40_791_904, 351),
    ("ViT-B-16", 12, 15, 86_203_392, None, None),  # MSMT17 SIE-OLP: pos-emb 211x768, cv_embed 15x768
])
def test_full_size_parameter_counts(name, stride, sie_cams, encoder_params, total_params, n_keys):
    """CLIPREID_SPEC.md 2.7 (Market-1501: 751 classes, 256x128), random init, no download."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_clip_backbone"
    cfg.MODEL.BACKBONE.CLIP.MODEL_NAME = name
    cfg.MODEL.BACKBONE.CLIP.STRIDE_SIZE = [stride, stride]
    cfg.MODEL.BACKBONE.CLIP.SIE_CAMERA = sie_cams > 0
    cfg.MODEL.BACKBONE.CLIP.NUM_CAMERAS = sie_cams
    cfg.MODEL.HEADS.NUM_CLASSES = 751
    model = CLIPBaseline(cfg)
    assert sum(p.numel() for p in model.backbone.visual.parameters()) == encoder_params
    if total_params is not None:
        assert sum(p.numel() for p in model.parameters()) == total_params
        assert len(model.state_dict()) == n_keys
    else:
        assert model.backbone.cv_embed.shape == (15, 768)
