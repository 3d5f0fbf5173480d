"""configs/<Dataset>/{bagtricks,AGW,sbs,mgn}_*.yml: fast-reid's methods for the six datasets, in this toolkit's
keys (bagtricks_R50 is fast-reid's BoT R50; bagtricks_R101 / _X50 the same recipe on two more backbones). Each loads and validates; each one fast-reid ships is, key by key, what the converter makes of
fast-reid's own file (tests/data/fastreid_configs): two independent paths to the same config."""

import os

import pytest

from clipreid_plugin.config import load_cfg
from clipreid_plugin.engine.validate import validate_config
from clipreid_plugin.usertools.fastreid_config import convert_fastreid_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FASTREID = os.path.join(REPO, "tests", "data", "fastreid_configs")
DATASETS = ["Market1501", "DukeMTMC", "MSMT17", "OccludedDuke", "VeRi", "VehicleID"]
FILES = ["bagtricks_R50", "bagtricks_R50-ibn", "bagtricks_R101-ibn", "bagtricks_S50"] + \
    [f"{m}_{b}" for m in ("AGW", "sbs") for b in ("R50", "R50-ibn", "R101-ibn", "S50")] + ["mgn_R50-ibn"]
# the same recipe on backbones fast-reid's zoo lacks (plain ResNet-101, ResNeXt-50)
EXTRA = ["bagtricks_R101", "bagtricks_X50"]
ALL = [f"{d}/{f}.yml" for d in DATASETS for f in FILES + EXTRA]
SHIPPED = [rel for rel in ALL if os.path.isfile(os.path.join(FASTREID, rel))]
# where the files differ by design: paths, machine settings, and the ImageNet file (fast-reid downloads it)
NOT_COMPARED = ("OUTPUT_DIR", "MODEL.BACKBONE.PRETRAIN_PATH", "DATALOADER.NUM_WORKERS")


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def test_every_method_and_backbone_exists_for_the_six_datasets():
    missing = [rel for rel in ALL if not os.path.isfile(os.path.join(REPO, "configs", rel))]
    assert not missing and len(ALL) == 90
    assert len(SHIPPED) == 41  # fast-reid ships 13 per person dataset but Occluded-Duke, one per vehicle dataset


@pytest.mark.parametrize("rel", ALL)
def test_config_loads_and_validates(rel, tmp_path):
    cfg = load_cfg(os.path.join(REPO, "configs", rel))
    dataset = rel.split("/")[0]
    assert cfg.DATASETS.NAMES == (dataset,) or list(cfg.DATASETS.NAMES) == [dataset]
    if dataset in ("VeRi", "VehicleID"):
        assert list(cfg.INPUT.SIZE_TRAIN) == [256, 256]
    assert cfg.SOLVER.SCHED.NAME in ("MultiStepLR", "CosineAnnealingLR") and cfg.SOLVER.WARMUP_ITERS > 0
    synthetic = load_cfg(os.path.join(REPO, "configs", rel), [
        "DATASETS.NAMES", "('SyntheticReID',)", "DATASETS.TESTS", "('SyntheticReID',)",
        "DATASETS.ROOT_DIR", str(tmp_path)])
    validate_config(synthetic)


@pytest.mark.parametrize("rel", SHIPPED)
def test_config_is_the_converted_fastreid_file(rel):
    ours = load_cfg(os.path.join(REPO, "configs", rel))
    theirs, unmapped = convert_fastreid_config(os.path.join(FASTREID, rel))
    assert not unmapped
    diff = {k: (_get(ours, k), v) for k, v in theirs.items()
            if k not in NOT_COMPARED and _get(ours, k) != (tuple(v) if isinstance(v, list) and
                                                           isinstance(_get(ours, k), tuple) else v)}
    assert not diff, diff
