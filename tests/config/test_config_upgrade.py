"""Checkpoints of earlier versions keep working: their stored config is read with today's keys, and
the bag-of-tricks head's old tensor names load into today's head."""

import torch

from clipreid_plugin.config import load_cfg
from clipreid_plugin.config.upgrade import upgrade_stored_config
from clipreid_plugin.modeling import build_model
from clipreid_plugin.utils.checkpoint import load_model_weights


def test_moved_and_renamed_keys_of_an_old_config():
    old = {"MODEL": {"META_ARCHITECTURE": "CLIPReID",
                     "BACKBONE": {"NAME": "build_clip_backbone", "CLIP": {"MODEL_NAME": "RN50", "SIE_COE": 1.0}},
                     "PROMPT": {"N_CTX": 4}, "HEADS": {"PROJ_DIM": 0, "NECK_FEAT": "before"},
                     "LOSSES": {"I2T": {"EPSILON": 0.1}, "SUPCON": {"SCALE": 1.0}, "CE": {"EPSILON": 0.1}}}}
    notes = upgrade_stored_config(old)
    assert old == {"MODEL": {"META_ARCHITECTURE": "CLIPReID", "BACKBONE": {"NAME": "build_clip_backbone"},
                             "HEADS": {}, "LOSSES": {"CE": {"EPSILON": 0.1}}},
                   "CLIPREID": {"BACKBONE": {"MODEL_NAME": "RN50", "SIE_COE": 1.0}, "PROMPT": {"N_CTX": 4},
                                "PROJ_DIM": 0, "LOSSES": {"I2T": {"EPSILON": 0.1}, "SUPCON": {"SCALE": 1.0}},
                                "NECK_FEAT": "before"}}
    assert len(notes) == 6
    # a host model: the old NECK_FEAT (its evaluation feature) becomes EVAL_FEAT; the triplet loss saw
    # the pre-BN feature then
    host = {"MODEL": {"META_ARCHITECTURE": "Baseline", "HEADS": {"NECK_FEAT": "after"}}}
    upgrade_stored_config(host)
    assert host == {"MODEL": {"META_ARCHITECTURE": "Baseline", "HEADS": {"EVAL_FEAT": "after", "NECK_FEAT": "before"}}}
    today = {"MODEL": {"HEADS": {"NECK_FEAT": "after", "EVAL_FEAT": "after"}}}
    assert upgrade_stored_config(today) == [] and today["MODEL"]["HEADS"]["NECK_FEAT"] == "after"


def test_old_head_tensor_names_load_into_todays_head(tmp_path):
    cfg = load_cfg("", ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.HEADS.NUM_CLASSES", "5", "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    trained = build_model(cfg)
    sd = trained.state_dict()
    old_names = {"heads.bottleneck.0.": "heads.neck.bn.", "heads.weight": "heads.neck.classifier.weight"}
    old_sd = {}
    for key, value in sd.items():
        for new, old in old_names.items():
            if key.startswith(new):
                key = old + key[len(new):]
                break
        old_sd[key] = value.clone()
    assert "heads.neck.bn.running_mean" in old_sd and "heads.neck.classifier.weight" in old_sd
    path = tmp_path / "old.pth"
    torch.save({"model": old_sd}, path)
    torch.manual_seed(1)
    fresh = build_model(cfg)
    load_model_weights(fresh, str(path))
    assert all(torch.equal(fresh.state_dict()[k], sd[k]) for k in sd)
