"""Config system: _BASE_ chains, overrides, readable errors."""

import os

import pytest

from clipreid_plugin.config import ConfigError, get_cfg


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_base_chain_relative_paths_several_levels(tmp_path):
    _write(tmp_path / "a" / "Base-root.yml", "SOLVER:\n  BASE_LR: 0.1\n  MAX_EPOCHS: 7\nINPUT:\n  SIZE_TRAIN: [64, 32]\n")
    _write(tmp_path / "a" / "b" / "mid.yml", "_BASE_: ../Base-root.yml\nSOLVER:\n  MAX_EPOCHS: 9\n")
    leaf = _write(tmp_path / "a" / "b" / "c" / "leaf.yml", "_BASE_: ../mid.yml\nSOLVER:\n  GAMMA: 0.5\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(leaf))
    assert cfg.SOLVER.BASE_LR == 0.1          # from the root, two levels up
    assert cfg.SOLVER.MAX_EPOCHS == 9         # mid overrides root
    assert cfg.SOLVER.GAMMA == 0.5            # leaf
    assert list(cfg.INPUT.SIZE_TRAIN) == [64, 32]


def test_overrides_parse_literals_like_yaml():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "5e-6", "SOLVER.STEPS_EPOCHS", "(30, 50)",
                         "MODEL.BACKBONE.VIT.STRIDE_SIZE", "[12, 12]", "TEST.FEAT_NORM", "False"])
    assert cfg.SOLVER.BASE_LR == 5e-6
    assert tuple(cfg.SOLVER.STEPS_EPOCHS) == (30, 50)
    assert list(cfg.MODEL.BACKBONE.VIT.STRIDE_SIZE) == [12, 12]
    assert cfg.TEST.FEAT_NORM is False


def test_yaml_scientific_notation_string_becomes_float(tmp_path):
    # PyYAML reads 5e-6 (no dot) as a string; the config must still accept it as a float
    f = _write(tmp_path / "c.yml", "SOLVER:\n  BASE_LR: 5e-6\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(f))
    assert cfg.SOLVER.BASE_LR == pytest.approx(5e-6)


def test_unknown_key_names_key_and_closest_valid_keys():
    cfg = get_cfg()
    with pytest.raises(ConfigError) as e:
        cfg.merge_from_list(["SOLVER.BASE_LRR", "0.1"])
    msg = str(e.value)
    assert "SOLVER.BASE_LRR" in msg and "SOLVER.BASE_LR" in msg


def test_unknown_key_in_file_names_file(tmp_path):
    f = _write(tmp_path / "bad.yml", "DATALOADER:\n  NUM_INSTANCES: 4\n")
    cfg = get_cfg()
    with pytest.raises(ConfigError) as e:
        cfg.merge_from_file(str(f))
    assert "DATALOADER.NUM_INSTANCES" in str(e.value)
    assert "DATALOADER.NUM_INSTANCE" in str(e.value)
    assert "bad.yml" in str(e.value)


def test_wrong_type_names_key_expected_and_given_type():
    cfg = get_cfg()
    with pytest.raises(ConfigError) as e:
        cfg.merge_from_list(["DATALOADER.NUM_INSTANCE", "four"])
    msg = str(e.value)
    assert "DATALOADER.NUM_INSTANCE" in msg and "int" in msg and "str" in msg


def test_empty_yaml_group_is_explained(tmp_path):
    # the reference's shipped configs end with a DATASETS: header whose children are commented out
    f = _write(tmp_path / "ref.yml", "SOLVER:\n  MAX_EPOCHS: 3\nDATASETS:\n#  NAMES: ('market1501')\n")
    cfg = get_cfg()
    with pytest.raises(ConfigError) as e:
        cfg.merge_from_file(str(f))
    assert "DATASETS" in str(e.value) and "null" in str(e.value)


def test_missing_file_and_odd_overrides():
    cfg = get_cfg()
    with pytest.raises(ConfigError, match="not found"):
        cfg.merge_from_file("/nonexistent/x.yml")
    with pytest.raises(ConfigError, match="pairs"):
        cfg.merge_from_list(["SOLVER.BASE_LR"])


def test_dump_reloads_identically(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.MAX_EPOCHS", "3", "OUTPUT_DIR", str(tmp_path)])
    path = tmp_path / "config.yaml"
    cfg.dump_to(str(path))
    again = get_cfg()
    again.merge_from_file(str(path))
    assert again == cfg


def test_lookup_key_finds_a_dotted_key_in_configs_and_plain_dicts():
    from clipreid_plugin.config import lookup_key

    cfg = get_cfg()
    node, leaf = lookup_key(cfg, "MODEL.HEADS.NUM_CLASSES")
    assert node is cfg.MODEL.HEADS and leaf == "NUM_CLASSES"
    assert lookup_key({"A": {"B": 1}}, "A.B") == ({"B": 1}, "B")
    for missing in ("MODEL.HEADS.NO_SUCH_KEY", "NO.SUCH", "MODEL.META_ARCHITECTURE.x"):  # the last: through a str
        assert lookup_key(cfg, missing) == (None, None)


def test_a_wrong_type_names_the_default():
    cfg = get_cfg()
    with pytest.raises(ConfigError, match=r"'MODEL.HEADS.NUM_CLASSES' expects a int \(default 0\)"):
        cfg.merge_from_list(["MODEL.HEADS.NUM_CLASSES", "'many'"])
