"""CLIPBaseline as the trainer uses it (batch dict in, weighted losses / embedding out), and its configs."""

import glob
import os

import pytest
import torch

from clipreid_plugin.config import get_cfg
from clipreid_plugin.modeling.meta_arch import META_ARCH_REGISTRY
from clipreid_plugin.plugins.clipreid.clip_baseline import CLIPBaseline

from tiny_clip import WIDTHS, max_err, random_batch, tiny_clip_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIGS = os.path.join(REPO, "projects", "CLIPReID", "configs")
BN_EPS = 1e-5  # BatchNorm1d's default, as the reference's bottlenecks (CLIPREID_SPEC.md 2.5)


def _tiny_cfg(**clip_keys):
    return tiny_clip_cfg("vit", "CLIPBaseline", num_classes=3, **clip_keys)


def _bn_by_hand(x, bn):
    """Eval-mode BatchNorm written out: (x - running_mean) / sqrt(running_var + eps) * weight + bias."""
    return (x - bn.running_mean) / torch.sqrt(bn.running_var + BN_EPS) * bn.weight + bn.bias


def _perturb_bnnecks(model, seed=0):
    """Running statistics and affine parameters of both BNNecks away from identity (the frozen bias
    too), so that "before" and "after" embeddings differ and each value must be used."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (model.neck.bn, model.neck_proj.bn):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=g))
            bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize("neck_feat", ["before", "after"])
def test_train_and_eval_contract(neck_feat):
    """Training: the weighted ID and triplet losses, scalars, BNNeck biases frozen. Eval: the
    embedding is concat(feature, projected) of the backbone ("before") or of their BNNeck outputs
    written out by hand ("after"), 128 + 64 wide."""
    assert META_ARCH_REGISTRY.get("CLIPBaseline") is CLIPBaseline
    cfg = _tiny_cfg()
    cfg.CLIPREID.NECK_FEAT = neck_feat
    model = CLIPBaseline(cfg).train()
    losses = model(random_batch())
    assert set(losses) == {"loss_cls", "loss_triplet"} and all(v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.neck.bn.bias.grad is None and model.neck_proj.bn.bias.grad is None  # BNNeck bias frozen
    assert model.neck.bn.weight.grad is not None and model.backbone.visual.conv1.weight.grad is not None

    _perturb_bnnecks(model)
    model.eval()
    images = random_batch()["images"]
    with torch.no_grad():
        emb = model(random_batch())
        out = model.backbone(images)
        feat, proj = out.feature, out.projected
        if neck_feat == "after":
            feat, proj = _bn_by_hand(feat, model.neck.bn), _bn_by_hand(proj, model.neck_proj.bn)
    assert emb.shape == (6, sum(WIDTHS["vit"]))
    assert max_err(emb, torch.cat([feat, proj], 1)) <= 1e-5


def test_sie_ids_come_from_the_batch():
    """With camera SIE the batch's camera ids reach the backbone: the embedding is the BNNeck
    (by hand) of the backbone run with those ids, and other ids give another embedding."""
    model = CLIPBaseline(_tiny_cfg(SIE_CAMERA=True, NUM_CAMERAS=2))
    _perturb_bnnecks(model)
    model.eval()
    batch = random_batch()
    assert model.neck_feat == "after"  # the default
    with torch.no_grad():
        emb = model(batch)
        swapped = model(dict(batch, camids=1 - batch["camids"]))
        out = model.backbone(batch["images"], batch["camids"])
        expected = torch.cat([_bn_by_hand(out.feature, model.neck.bn),
                              _bn_by_hand(out.projected, model.neck_proj.bn)], 1)
    assert max_err(emb, expected) <= 1e-5
    assert max_err(emb, swapped) > 1e-3  # the camera embedding is used


def test_config_errors():
    """Training without classes and an unknown NECK_FEAT are explained by their keys."""
    cfg = _tiny_cfg()
    cfg.MODEL.HEADS.NUM_CLASSES = 0
    model = CLIPBaseline(cfg).train()
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        model(random_batch())
    cfg.CLIPREID.NECK_FEAT = "middle"
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
    """Each shipped baseline config resolves to the reference's values (CLIPREID_SPEC.md 1.4)."""
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    cfg.merge_from_file(os.path.join(CONFIGS, folder, fname + ".yml"))
    exp = dict(VIT if fname == "vit_base" else CNN)
    if folder == "vehicleid" and fname == "vit_base":
        exp["lr"] = 5e-5
    name, size = DATASETS[folder]
    m, s = cfg.MODEL, cfg.SOLVER
    assert m.META_ARCHITECTURE == "CLIPBaseline" and m.BACKBONE.NAME == "build_clip_backbone"
    assert cfg.CLIPREID.BACKBONE.MODEL_NAME == exp["model"] and m.BACKBONE.PRETRAIN
    assert list(cfg.CLIPREID.BACKBONE.STRIDE_SIZE) == [16, 16] and not cfg.CLIPREID.BACKBONE.SIE_CAMERA
    assert cfg.CLIPREID.NECK_FEAT == "before"
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
    """The table above covers all 12 shipped baseline configs (6 datasets x ViT / CNN)."""
    files = sorted(glob.glob(os.path.join(CONFIGS, "*", "*_base.yml")))
    assert len(files) == 12


@pytest.mark.parametrize("name, stride, sie_cams, encoder_params, total_params, n_keys", [
    ("ViT-B-16", 16, 0, 86_140_416, 87_104_256, 164),
    ("RN50", 16, 0, 38_478_688, 40_791_904, 351),
    ("ViT-B-16", 12, 15, 86_203_392, None, None),  # MSMT17 SIE-OLP: pos-emb 211x768, cv_embed 15x768
])
def test_full_size_parameter_counts(name, stride, sie_cams, encoder_params, total_params, n_keys):
    """CLIPREID_SPEC.md 2.7 (Market-1501: 751 classes, 256x128), random init, no download."""
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    cfg.MODEL.BACKBONE.NAME = "build_clip_backbone"
    cfg.CLIPREID.BACKBONE.MODEL_NAME = name
    cfg.CLIPREID.BACKBONE.STRIDE_SIZE = [stride, stride]
    cfg.CLIPREID.BACKBONE.SIE_CAMERA = sie_cams > 0
    cfg.CLIPREID.BACKBONE.NUM_CAMERAS = sie_cams
    cfg.MODEL.HEADS.NUM_CLASSES = 751
    model = CLIPBaseline(cfg)
    assert sum(p.numel() for p in model.backbone.visual.parameters()) == encoder_params
    if total_params is not None:
        assert sum(p.numel() for p in model.parameters()) == total_params
        assert len(model.state_dict()) == n_keys
    else:
        assert model.backbone.cv_embed.shape == (15, 768)
