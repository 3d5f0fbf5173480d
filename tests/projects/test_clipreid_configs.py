"""Every CLIP-ReID project config loads and resolves to the reference's values (spec 1.4)."""

import glob
import os

import pytest

from clipreid_plugin.config import get_cfg

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "projects", "CLIPReID", "configs")
DATASETS = {"market1501": "Market1501", "msmt17": "MSMT17", "dukemtmc": "DukeMTMC", "occ_duke": "OccludedDuke",
            "veri": "VeRi", "vehicleid": "VehicleID"}
PERSON = {"market1501", "msmt17", "dukemtmc", "occ_duke"}

# The reference's values, transcribed from CLIPREID_SPEC.md 1.4 (baselines and CLIP-ReID tables):
# (model, ID weight, label smoothing on, stage-1 batch, stage-1 epochs, stage-2 LR, WD, warmup factor,
#  steps, epochs)
VIT = dict(model="ViT-B-16", lr=5e-6, wd=1e-4, wf=0.1, steps=(30, 50), epochs=60, mean=[0.5] * 3)
RN = dict(model="RN50", lr=3.5e-4, wd=5e-4, wf=0.01, steps=(40, 70), epochs=120, mean=[0.485, 0.456, 0.406])


def expected(folder, method):
    vit = method.startswith("vit")
    e = dict(VIT if vit else RN)
    e["size"] = [256, 128] if folder in PERSON else [256, 256]
    e["clipreid"] = "clipreid" in method
    e["id_w"] = 0.25 if (vit and e["clipreid"]) else 1.0
    # label smoothing is off for both VehicleID baselines and the VehicleID CNN CLIP-ReID
    e["ls"] = not (folder == "vehicleid" and (method in ("cnn_base", "vit_base", "cnn_clipreid")))
    if folder == "vehicleid" and vit:
        e["lr"] = 5e-5
    e["s1_batch"] = 256 if folder == "vehicleid" else 64
    e["s1_epochs"] = 120 if (vit and folder in PERSON) else 60
    e["stride"] = [12, 12] if method.endswith("sie_olp") else [16, 16]
    e["sie_cam"] = method.endswith("sie_olp") and folder != "vehicleid"
    e["sie_view"] = method.endswith("sie_olp") and folder == "veri"
    return e


CASES = [(f, m) for f in DATASETS for m in ("cnn_base", "vit_base", "cnn_clipreid", "vit_clipreid",
                                             "vit_clipreid_sie_olp")]


def _load(path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    return cfg


@pytest.mark.parametrize("folder,method", CASES)
def test_config_matches_reference(folder, method):
    cfg = _load(os.path.join(ROOT, folder, method + ".yml"))
    e = expected(folder, method)
    assert cfg.CLIPREID.BACKBONE.MODEL_NAME == e["model"]
    assert cfg.MODEL.META_ARCHITECTURE == ("CLIPReID" if e["clipreid"] else "CLIPBaseline")
    assert list(cfg.INPUT.SIZE_TRAIN) == e["size"] == list(cfg.INPUT.SIZE_TEST)
    assert list(cfg.INPUT.PIXEL_MEAN) == e["mean"]
    assert tuple(cfg.DATASETS.NAMES) == (DATASETS[folder],) == tuple(cfg.DATASETS.TESTS)
    s = cfg.SOLVER
    assert (s.BASE_LR, s.WEIGHT_DECAY, s.WEIGHT_DECAY_BIAS, s.WARMUP_FACTOR) == (e["lr"], e["wd"], e["wd"], e["wf"])
    assert tuple(s.STEPS_EPOCHS) == e["steps"] and s.MAX_EPOCHS == e["epochs"]
    assert s.CHECKPOINT_PERIOD == e["epochs"] == cfg.TEST.EVAL_PERIOD
    assert (s.OPTIMIZER_NAME, s.BIAS_LR_FACTOR, s.IMS_PER_BATCH, s.WARMUP_EPOCHS, s.GAMMA) == ("Adam", 2.0, 64, 10, 0.1)
    assert cfg.DATALOADER.NUM_INSTANCE == 4 and cfg.DATALOADER.SAMPLER == "PKSampler"
    assert (cfg.INPUT.FLIP.PROB, cfg.INPUT.REA.PROB, cfg.INPUT.PADDING.SIZE) == (0.5, 0.5, 10)
    assert cfg.CLIPREID.NECK_FEAT == "before" and cfg.TEST.FEAT_NORM and cfg.TEST.METRIC == "euclidean"
    assert cfg.MODEL.LOSSES.CE.SCALE == e["id_w"] and cfg.MODEL.LOSSES.TRI.SCALE == 1.0
    assert cfg.MODEL.LOSSES.TRI.MARGIN == 0.3
    assert cfg.MODEL.LOSSES.CE.EPSILON == (0.1 if e["ls"] else 0.0)
    clip = cfg.CLIPREID.BACKBONE
    assert list(clip.STRIDE_SIZE) == e["stride"]
    assert (clip.SIE_CAMERA, clip.SIE_VIEW) == (e["sie_cam"], e["sie_view"])
    if e["sie_cam"]:
        assert clip.SIE_COE == 1.0
    if e["clipreid"]:
        assert cfg.CLIPREID.LOSSES.I2T.EPSILON == cfg.MODEL.LOSSES.CE.EPSILON and cfg.CLIPREID.LOSSES.I2T.SCALE == 1.0
        assert "ImageTextCrossEntropyLoss" in cfg.MODEL.LOSSES.NAMES
        s1 = cfg.CLIPREID.STAGE1
        assert (s1.IMS_PER_BATCH, s1.MAX_EPOCHS) == (e["s1_batch"], e["s1_epochs"])
        assert (s1.BASE_LR, s1.WARMUP_LR_INIT, s1.LR_MIN, s1.WEIGHT_DECAY, s1.WARMUP_EPOCHS) == (3.5e-4, 1e-5, 1e-6, 1e-4, 5)
        assert cfg.CLIPREID.PROMPT.N_CTX == 4


def test_user_example_config_is_vit_clipreid_on_veri():
    a = _load(os.path.join(ROOT, "veri_vit.yml"))
    b = _load(os.path.join(ROOT, "veri", "vit_clipreid.yml"))
    assert a == b


def test_every_project_config_loads():
    files = glob.glob(os.path.join(ROOT, "**", "*.yml"), recursive=True)
    assert len(files) >= 31
    for f in files:
        _load(f)
