"""Miniature copies of each dataset's real layout: parsed counts, ids, camids, views, errors."""

import os

import pytest

from clipreid_plugin.data import DATASET_REGISTRY, DatasetError
from clipreid_plugin.data.datasets import (MSMT17, DukeMTMC, GenericReID, Market1501, OccludedDuke,
                                           VehicleID, VeRi)


def touch(folder, *names):
    os.makedirs(folder, exist_ok=True)
    for n in names:
        os.makedirs(os.path.dirname(os.path.join(folder, n)), exist_ok=True)
        open(os.path.join(folder, n), "wb").close()


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _market_layout(base):
    touch(os.path.join(base, "bounding_box_train"), "0002_c1s1_000451_03.jpg", "0002_c3s1_000551_01.jpg",
          "0007_c2s3_070952_01.jpg", "0010_c6s4_002427_02.jpg", "-1_c1s1_000401_03.jpg", "Thumbs.db")
    touch(os.path.join(base, "query"), "0002_c2s1_000301_00.jpg", "0007_c5s1_001101_00.jpg")
    touch(os.path.join(base, "bounding_box_test"), "0000_c1s1_000151_01.jpg", "-1_c3s1_000126_02.jpg",
          "0002_c4s1_000276_01.jpg", "0007_c6s1_004626_01.jpg")


def test_market1501_parsing(tmp_path):
    _market_layout(tmp_path / "Market-1501-v15.09.15")
    ds = Market1501(str(tmp_path))
    assert sorted((os.path.basename(p), pid, cam, v) for p, pid, cam, v in ds.train) == [
        ("0002_c1s1_000451_03.jpg", 0, 0, 0), ("0002_c3s1_000551_01.jpg", 0, 2, 0),
        ("0007_c2s3_070952_01.jpg", 1, 1, 0), ("0010_c6s4_002427_02.jpg", 2, 5, 0)]
    assert [(pid, cam) for _, pid, cam, _ in ds.query] == [(2, 1), (7, 4)]
    assert [(pid, cam) for _, pid, cam, _ in ds.gallery] == [(0, 0), (2, 3), (7, 5)]  # junk dropped
    assert all(os.path.isabs(p) for p, *_ in ds.train)
    table = ds.show_summary()
    assert "| train" in table and "identities" in table
    assert ds.kind == "person" and ds.random_gallery is False


def test_registry_names_and_aliases():
    for name, cls in [("Market1501", Market1501), ("market1501", Market1501), ("dukemtmc", DukeMTMC),
                      ("occ_duke", OccludedDuke), ("msmt17", MSMT17), ("veri", VeRi),
                      ("VehicleID", VehicleID), ("GenericReID", GenericReID)]:
        assert DATASET_REGISTRY.get(name) is cls
    with pytest.raises(KeyError, match="Market1501"):
        DATASET_REGISTRY.get("Market1502")


def test_wrong_root_lists_what_was_looked_for_and_found(tmp_path):
    touch(tmp_path / "market1501", "readme.txt")
    with pytest.raises(DatasetError) as e:
        Market1501(str(tmp_path))
    msg = str(e.value)
    assert "Market-1501-v15.09.15" in msg and "bounding_box_train" in msg
    assert "contains: market1501" in msg


def test_missing_split_folder_and_bad_names(tmp_path):
    base = tmp_path / "Market-1501-v15.09.15"
    _market_layout(base)
    os.rename(base / "query", base / "queries")
    with pytest.raises(DatasetError, match=r"lacks query"):
        Market1501(str(tmp_path))
    os.rename(base / "queries", base / "query")
    touch(base / "query", "person_17.jpg")
    with pytest.raises(DatasetError, match=r"person_17.jpg.*PID_cCAM"):
        Market1501(str(tmp_path))


def test_empty_split(tmp_path):
    base = tmp_path / "Market-1501-v15.09.15"
    _market_layout(base)
    for f in os.listdir(base / "query"):
        os.remove(base / "query" / f)
    with pytest.raises(DatasetError, match=r"query contains no image"):
        Market1501(str(tmp_path))


def test_duke_and_occluded_duke_share_the_dukemtmcreid_root(tmp_path):
    for sub in ("DukeMTMC-reID", "Occluded_Duke"):
        base = tmp_path / "dukemtmcreid" / sub
        touch(base / "bounding_box_train", "0005_c2_f0046985.jpg", "0005_c8_f0047200.jpg", "7140_c1_f0.jpg")
        touch(base / "query", "0005_c1_f0046900.jpg")
        touch(base / "bounding_box_test", "0005_c3_f0047000.jpg", "0099_c7_f0.jpg")
    duke, occ = DukeMTMC(str(tmp_path)), OccludedDuke(str(tmp_path))
    assert [(pid, cam, v) for _, pid, cam, v in duke.train] == [(0, 1, 0), (0, 7, 0), (1, 0, 0)]
    assert [(pid, cam, v) for _, pid, cam, v in occ.train] == [(0, 1, 1), (0, 7, 1), (1, 0, 1)]
    assert "Occluded_Duke" in occ.train[0][0]
    assert [(pid, cam) for _, pid, cam, _ in duke.gallery] == [(5, 2), (99, 6)]


def _msmt_lists(base, train_dir="train", test_dir="test"):
    write(str(base / "list_train.txt"), "0000/0000_000_01_0303morning_0015_0.jpg 0\n"
          "0001/0001_003_15_0303afternoon_0001_0.jpg 1\n")
    write(str(base / "list_val.txt"), "0000/0000_001_02_0303morning_0016_0.jpg 0\n")
    write(str(base / "list_query.txt"), "0000/0000_000_05_0303morning_0001_0.jpg 0\n")
    write(str(base / "list_gallery.txt"), "0000/0000_000_07_0303morning_0002_0.jpg 0\n"
          "0003/0003_002_12_0303noon_0001_0.jpg 3\n")
    os.makedirs(base / train_dir, exist_ok=True)
    os.makedirs(base / test_dir, exist_ok=True)


@pytest.mark.parametrize("layout", [("MSMT17", "train", "test"), ("MSMT17_V2", "mask_train_v2", "mask_test_v2")])
def test_msmt17_train_is_train_plus_val(tmp_path, layout):
    folder, tr, te = layout
    _msmt_lists(tmp_path / folder, tr, te)
    ds = MSMT17(str(tmp_path))
    assert [(pid, cam) for _, pid, cam, _ in ds.train] == [(0, 0), (1, 14), (0, 1)]
    assert ds.train[0][0] == str(tmp_path / folder / tr / "0000/0000_000_01_0303morning_0015_0.jpg")
    assert [(pid, cam) for _, pid, cam, _ in ds.gallery] == [(0, 6), (3, 11)]
    assert ds.query[0][0].startswith(str(tmp_path / folder / te))


def test_msmt17_bad_list_line_names_file_and_line(tmp_path):
    _msmt_lists(tmp_path / "MSMT17")
    write(str(tmp_path / "MSMT17/list_query.txt"), "0000/0000_000_05_a_0001_0.jpg 0\n\n"
          "0001/0001_000_05_a_0001_0.jpg\n")
    with pytest.raises(DatasetError, match=r"list_query.txt, line 3: expected 2 fields"):
        MSMT17(str(tmp_path))
    write(str(tmp_path / "MSMT17/list_query.txt"), "0000/0000_000_05_a_0001_0.jpg zero\n")
    with pytest.raises(DatasetError, match=r"list_query.txt, line 1: the label must be an integer"):
        MSMT17(str(tmp_path))


def _keypoint_line(name, view):
    return f"VeRi/{name} " + " ".join(["-1"] * 40) + f" {view}\n"


def _veri_layout(base):
    touch(base / "image_train", "0001_c001_00016450_0.jpg", "0001_c002_00016455_0.jpg", "0002_c020_0.jpg")
    touch(base / "image_query", "0002_c003_00084280_0.jpg")
    touch(base / "image_test", "0002_c004_00084300_0.jpg", "0005_c001_0.jpg")


def test_veri_views_from_keypoint_files_drop_unlabelled(tmp_path):
    base = tmp_path / "VeRi"
    _veri_layout(base)
    write(str(base / "keypoint_train.txt"), _keypoint_line("image_train/0001_c001_00016450_0.jpg", 3)
          + _keypoint_line("image_train/0002_c020_0.jpg", 6))
    write(str(base / "keypoint_test.txt"), _keypoint_line("image_test/0002_c003_00084280_0.jpg", 7)
          + _keypoint_line("image_test/0002_c004_00084300_0.jpg", 1)
          + _keypoint_line("image_test/0002_c004_00084300_0.jpg", 2))  # later line wins
    ds = VeRi(str(tmp_path))
    assert [(pid, cam, v) for _, pid, cam, v in ds.train] == [(0, 0, 3), (1, 19, 6)]  # c002 dropped
    assert [(pid, cam, v) for _, pid, cam, v in ds.query] == [(2, 2, 7)]  # query name -> test map
    assert [(pid, cam, v) for _, pid, cam, v in ds.gallery] == [(2, 3, 2)]  # 0005 dropped
    assert ds.kind == "vehicle"


def test_veri_without_keypoint_files_keeps_all_with_view_0(tmp_path):
    _veri_layout(tmp_path / "VeRi")
    ds = VeRi(str(tmp_path))
    assert len(ds.train) == 3 and len(ds.gallery) == 2 and {s[3] for s in ds.train} == {0}


def test_veri_with_one_keypoint_file_is_an_error(tmp_path):
    _veri_layout(tmp_path / "VeRi")
    write(str(tmp_path / "keypoint_train.txt"), _keypoint_line("image_train/0001_c001_00016450_0.jpg", 3))
    with pytest.raises(DatasetError, match=r"keypoint_test.txt"):
        VeRi(str(tmp_path))
    write(str(tmp_path / "keypoint_test.txt"), "VeRi/image_test/x.jpg 1 2 3\n")
    with pytest.raises(DatasetError, match=r"keypoint_test.txt, line 1: expected 42 fields"):
        VeRi(str(tmp_path))


def test_veri_keypoint_file_that_is_not_utf8_names_file_and_line(tmp_path):
    _veri_layout(tmp_path / "VeRi")
    write(str(tmp_path / "VeRi" / "keypoint_train.txt"), _keypoint_line("image_train/0001_c001_00016450_0.jpg", 3))
    with open(tmp_path / "VeRi" / "keypoint_test.txt", "wb") as f:
        f.write(_keypoint_line("image_test/0002_c003_00084280_0.jpg", 7).encode())
        f.write("image_test/caf\u00e9.jpg".encode("latin-1") + b" 1\n")
    with pytest.raises(DatasetError, match=r"keypoint_test.txt, line 2: not UTF-8 text .*re-save the file as UTF-8"):
        VeRi(str(tmp_path))


def _vehicleid_layout(base):
    os.makedirs(base / "image", exist_ok=True)
    write(str(base / "train_test_split/train_list.txt"), "0001 30\n0002 10\n0003 30\n0004 10\n0005 20\n")
    write(str(base / "train_test_split/test_list_800.txt"), "0100 7\n0101 5\n0102 7\n0103 7\n0104 5\n")
    write(str(base / "train_test_split/test_list_1600.txt"), "0100 7\n0101 5\n0105 9\n0106 9\n")


def test_vehicleid_train_and_random_gallery_test(tmp_path):
    base = tmp_path / "VehicleID_V1.0"
    _vehicleid_layout(base)
    ds = VehicleID(str(tmp_path), test_size=800, split_seed=3)
    assert [(os.path.basename(p), pid, cam, v) for p, pid, cam, v in ds.train] == [
        ("0002.jpg", 0, 0, 1), ("0004.jpg", 0, 0, 1), ("0005.jpg", 1, 0, 1), ("0001.jpg", 2, 0, 1),
        ("0003.jpg", 2, 0, 1)]
    assert VehicleID.random_gallery is True and ds.kind == "vehicle"
    assert [os.path.basename(s[0]) for s in ds.test_items()] == [f"010{i}.jpg" for i in range(5)]
    assert {s[2] for s in ds.test_items()} == {0}
    assert sorted(s[1] for s in ds.gallery) == [5, 7] and {s[2] for s in ds.gallery} == {1}
    assert len(ds.query) == 3 and {s[2] for s in ds.query} == {0}
    assert {s[0] for s in ds.query} | {s[0] for s in ds.gallery} == {s[0] for s in ds.test_items()}
    assert sorted(s[1] for s in VehicleID(str(tmp_path), test_size=1600).test_items()) == [5, 7, 9, 9]
    with pytest.raises(DatasetError, match=r"test_list_2400.txt"):
        VehicleID(str(tmp_path), test_size=2400)
    with pytest.raises(DatasetError, match=r"TEST_SIZE must be one of"):
        VehicleID(str(tmp_path), test_size=1000)


def test_generic_from_file_names(tmp_path):
    base = tmp_path / "generic"
    touch(base / "train", "cam_a/0003_c1_x.jpg", "cam_b/0009_c2_y.png", "-1_c1_junk.jpg")
    touch(base / "query", "0003_c2_v4.jpg")
    touch(base / "gallery", "0003_c1_g.jpg", "0000_c3_d.jpg")
    ds = GenericReID(str(tmp_path))
    assert sorted((pid, cam) for _, pid, cam, _ in ds.train) == [(0, 0), (1, 1)]
    assert [(pid, cam) for _, pid, cam, _ in ds.gallery] == [(0, 2), (3, 0)]
    ds = GenericReID(str(tmp_path), pattern=r"(?P<pid>-?\d+)_c(?P<camid>\d+)(?:_v(?P<viewid>\d+))?",
                     camid_offset=0)
    assert ds.query[0][1:] == (3, 2, 4) and {s[3] for s in ds.gallery} == {0}
    with pytest.raises(DatasetError, match="named groups"):
        GenericReID(str(tmp_path), pattern=r"(\d+)_c(\d+)")


def test_generic_regex_groups_that_are_not_integers_name_the_file(tmp_path):
    """A pattern whose pid group captures '12-3' is a one-line error naming the image and the key."""
    touch(tmp_path / "generic" / "train", "12-3_c1_x.jpg")
    touch(tmp_path / "generic" / "query", "0003_c2.jpg")
    touch(tmp_path / "generic" / "gallery", "0003_c1.jpg")
    with pytest.raises(DatasetError, match=r"12-3_c1_x.jpg: the groups of DATASETS.GENERIC.PATTERN .* must "
                                           r"capture integers \(invalid literal for int\(\) with base 10: '12-3'\)"):
        GenericReID(str(tmp_path), pattern=r"(?P<pid>[\d-]+)_c(?P<camid>\d+)")


def test_generic_from_csv_with_line_numbers(tmp_path):
    base = tmp_path / "mydata"
    write(str(base / "train.csv"), "path,pid,camid,viewid\nimgs/a.jpg,12,1,2\nimgs/b.jpg,40,2,\n")
    write(str(base / "query.csv"), "path,pid,camid\nimgs/c.jpg,12,2\n")
    write(str(base / "gallery.csv"), "path,pid,camid\nimgs/d.jpg,12,1\nimgs/e.jpg,x,1\n")
    with pytest.raises(DatasetError, match=r"gallery.csv, line 3"):
        GenericReID(str(tmp_path), folder="mydata")
    write(str(base / "gallery.csv"), "path,pid,camid\nimgs/d.jpg,12,1\n")
    ds = GenericReID(str(tmp_path), folder="mydata", kind="vehicle")
    assert [(os.path.basename(p), pid, cam, v) for p, pid, cam, v in ds.train] == [
        ("a.jpg", 0, 0, 2), ("b.jpg", 1, 1, 0)]
    assert ds.train[0][0] == str(base / "imgs/a.jpg") and ds.kind == "vehicle"
    write(str(base / "query.csv"), "path,pid,camid\nimgs/c.jpg,12,0\n")
    with pytest.raises(DatasetError, match=r"query.csv, line 2.*CAMID_OFFSET"):
        GenericReID(str(tmp_path), folder="mydata")
    with pytest.raises(DatasetError, match=r"does not exist"):
        GenericReID(str(tmp_path), folder="nothing")


def test_vehicleid_test_loader_yields_whole_test_split_with_no_query(tmp_path):
    from clipreid_plugin.config import get_cfg
    from clipreid_plugin.data import build_reid_test_loader

    _vehicleid_layout(tmp_path / "VehicleID_V1.0")
    cfg = get_cfg()
    cfg.DATASETS.ROOT_DIR = str(tmp_path)
    cfg.DATALOADER.NUM_WORKERS = 0
    loader, num_query = build_reid_test_loader(cfg, "VehicleID")
    assert num_query == 0
    assert [s[1] for s in loader.dataset.samples] == [7, 5, 7, 7, 5]


def test_a_dataset_table_is_logged_once_per_process(tmp_path):
    import logging

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    log = logging.getLogger("clipreid_plugin.data.datasets.bases")
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        for root in ("a", "a", "a", "b"):  # training loader, test loader of two evaluations; another copy
            _market_layout(tmp_path / root / "Market-1501-v15.09.15")
            table = Market1501(str(tmp_path / root)).show_summary()
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert len(messages) == 2 and all("| train" in m for m in messages) and "| train" in table
