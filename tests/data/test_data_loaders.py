"""Loaders on the built-in SyntheticReID: batch contract, determinism, decode cache, sharding,
bad images, multi-dataset training, and the synthetic generator itself."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from clipreid_plugin.config import get_cfg
from clipreid_plugin.data import (DatasetError, build_reid_test_loader, build_reid_train_loader,
                                  build_inference_loader, build_transforms)
from clipreid_plugin.data.datasets import SyntheticReID
from clipreid_plugin.utils import comm

SMALL = dict(NUM_TRAIN_IDS=6, NUM_TEST_IDS=4, IMAGES_PER_ID=5, QUERY_PER_ID=2, NUM_CAMERAS=3,
             NUM_DISTRACTORS=3, NUM_JUNK=2, SIZE=[32, 16])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def make_cfg(root, tmp_out=None, **dataloader):
    cfg = get_cfg()
    cfg.DATASETS.ROOT_DIR = root
    cfg.DATASETS.NAMES = ("SyntheticReID",)
    for k, v in SMALL.items():
        cfg.DATASETS.SYNTHETIC[k] = v
    cfg.INPUT.SIZE_TRAIN = [32, 16]
    cfg.INPUT.SIZE_TEST = [32, 16]
    cfg.INPUT.PADDING.SIZE = 4
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.DATALOADER.NUM_INSTANCE = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.IMS_PER_BATCH = 8
    cfg.OUTPUT_DIR = tmp_out or os.path.join(root, "out")
    for k, v in dataloader.items():
        cfg.DATALOADER[k] = v
    return cfg


def test_synthetic_layout_and_counts(root):
    ds = SyntheticReID(make_cfg(root))
    folder = os.path.join(root, "SyntheticReID")
    assert sorted(os.listdir(folder)) == ["bounding_box_test", "bounding_box_train", "query",
                                          "synthetic_meta.json"]
    assert ds.statistics(ds.train) == (6, 30, 3, 1)
    assert ds.statistics(ds.query) == (4, 8, 3, 1)
    gallery_pids = sorted({s[1] for s in ds.gallery})
    assert gallery_pids == [0, 7, 8, 9, 10] and len(ds.gallery) == 4 * 3 + 3  # junk dropped
    assert len(os.listdir(os.path.join(folder, "bounding_box_test"))) == 4 * 3 + 3 + 2
    for p, pid, cam, _ in ds.query:  # every query has a true match in another camera
        assert any(g[1] == pid and g[2] != cam for g in ds.gallery)
    with Image.open(ds.train[0][0]) as im:
        assert im.size == (16, 32) and im.format == "JPEG"


def test_synthetic_mismatching_parameters_are_reported(root):
    cfg = make_cfg(root)
    SyntheticReID(cfg)
    cfg.DATASETS.SYNTHETIC.NUM_TRAIN_IDS = 7
    with pytest.raises(DatasetError, match=r"num_train_ids.*\(6, 7\).*Delete the folder"):
        SyntheticReID(cfg)
    cfg.DATASETS.SYNTHETIC.NUM_CAMERAS = 12
    with pytest.raises(DatasetError, match=r"NUM_CAMERAS=12"):
        SyntheticReID(cfg)


def test_synthetic_generation_is_deterministic_and_safe_concurrently(tmp_path):
    code = ("import sys; from clipreid_plugin.data.datasets import SyntheticReID; "
            "SyntheticReID(sys.argv[1], num_train_ids=3, num_test_ids=2, images_per_id=3, "
            "num_cameras=3, num_distractors=1, num_junk=1, size=(32, 16))")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "a")], env=env) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert sorted(os.listdir(tmp_path / "a")) == ["SyntheticReID"]  # no temp folder left behind
    SyntheticReID(str(tmp_path / "b"), num_train_ids=3, num_test_ids=2, images_per_id=3, num_cameras=3,
                  num_distractors=1, num_junk=1, size=(32, 16))
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        a, b = (tmp_path / x / "SyntheticReID" / split for x in "ab")
        assert sorted(os.listdir(a)) == sorted(os.listdir(b))
        for name in os.listdir(a):
            assert (a / name).read_bytes() == (b / name).read_bytes()


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def _same(e1, e2):
    return len(e1) == len(e2) and all(
        torch.equal(a["images"], b["images"]) and torch.equal(a["targets"], b["targets"])
        and a["img_paths"] == b["img_paths"] for a, b in zip(e1, e2))


def test_train_loader_batch_contract(root):
    loader = build_reid_train_loader(make_cfg(root))
    assert tuple(loader.data_info) == (6, 3, 1, "person")
    assert len(loader.dataset) == 30
    batches = _epoch(loader, 0)
    assert len(batches) == len(loader) > 0
    b = batches[0]
    assert b["images"].shape == (8, 3, 32, 16) and b["images"].dtype == torch.float32
    for key in ("targets", "camids", "viewids"):
        assert b[key].dtype == torch.int64 and b[key].shape == (8,)
    assert len(b["img_paths"]) == 8 and sorted(torch.bincount(b["targets"]).tolist())[-4:] == [2] * 4
    by_path = {s[0]: s for s in loader.dataset}
    for p, t, c in zip(b["img_paths"], b["targets"].tolist(), b["camids"].tolist()):
        assert by_path[p][1:3] == (t, c)


def test_train_epochs_are_deterministic_whatever_came_before_and_num_workers(root):
    cfg = make_cfg(root)
    reference = _epoch(build_reid_train_loader(cfg), 2)
    torch.manual_seed(999)  # global state must not matter
    np.random.seed(5)
    loader = build_reid_train_loader(make_cfg(root, NUM_WORKERS=2, PERSISTENT_WORKERS=True))
    _epoch(loader, 0)
    assert _same(_epoch(loader, 2), reference)
    assert not _same(_epoch(loader, 3), reference)
    cfg.SOLVER.SEED = 77
    assert not _same(_epoch(build_reid_train_loader(cfg), 2), reference)


@pytest.mark.parametrize("mode", ["ram", "mmap"])
def test_decode_cache_gives_identical_batches(root, tmp_path, mode):
    reference = _epoch(build_reid_train_loader(make_cfg(root)), 1)
    loader = build_reid_train_loader(make_cfg(root, str(tmp_path), NUM_WORKERS=2, DECODE_CACHE=mode))
    _epoch(loader, 0)  # fills the cache in the workers
    cache = loader.image_dataset.cache
    assert cache.num_filled() == len({i for i in loader.sampler.epoch_indices(0)})
    assert _same(_epoch(loader, 1), reference)
    if mode == "mmap":
        assert os.listdir(os.path.join(str(tmp_path), "decode_cache"))


def test_train_loader_two_ranks_are_disjoint(root, monkeypatch):
    cfg = make_cfg(root)
    cfg.SOLVER.IMS_PER_BATCH = 8
    shares = []
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    for rank in (0, 1):
        monkeypatch.setattr(comm, "get_rank", lambda r=rank: r)
        loader = build_reid_train_loader(cfg)
        loader.set_epoch(4)
        shares.append(loader._batches.batches)
    assert len(shares[0]) == len(shares[1]) > 0
    for b0, b1 in zip(*shares):
        assert len(b0) == len(b1) == 4
    pos = [[i for b in s for i, _ in b] for s in shares]
    seeds = [{sd for b in s for _, sd in b} for s in shares]
    assert not seeds[0] & seeds[1]
    assert len(pos[0]) == len(pos[1])


def test_test_loader_query_then_gallery_raw_pids_and_shards(root, monkeypatch):
    cfg = make_cfg(root)
    ds = SyntheticReID(cfg)
    loader, num_query = build_reid_test_loader(cfg, "SyntheticReID")
    assert num_query == len(ds.query)
    batches = list(loader)
    paths = [p for b in batches for p in b["img_paths"]]
    assert paths == [s[0] for s in ds.query + ds.gallery]
    assert torch.cat([b["targets"] for b in batches]).tolist() == [s[1] for s in ds.query + ds.gallery]
    tf = build_transforms(cfg, False)
    with Image.open(paths[0]) as im:
        assert torch.equal(batches[0]["images"][0], tf(im))
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    parts = []
    for rank in (0, 1):
        monkeypatch.setattr(comm, "get_rank", lambda r=rank: r)
        shard, nq = build_reid_test_loader(cfg, "SyntheticReID")
        assert nq == num_query and shard.batch_size == 4
        parts.append([p for b in shard for p in b["img_paths"]])
    assert parts[0] + parts[1] == paths and abs(len(parts[0]) - len(parts[1])) <= 1


def test_inference_loader_over_train_images_fixed_order_no_augmentation(root):
    cfg = make_cfg(root)
    train = build_reid_train_loader(cfg)
    loader = build_inference_loader(cfg, train.dataset, batch_size=7, purpose="embed-train")
    batches = list(loader)
    assert [p for b in batches for p in b["img_paths"]] == [s[0] for s in train.dataset]
    assert torch.cat([b["targets"] for b in batches]).tolist() == [s[1] for s in train.dataset]
    tf = build_transforms(cfg, False)
    with Image.open(batches[1]["img_paths"][2]) as im:
        assert torch.equal(batches[1]["images"][2], tf(im))
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(batches, loader))


def _generic_with_bad_image(root):
    base = os.path.join(root, "generic_bad")
    for split in ("train", "query", "gallery"):
        os.makedirs(os.path.join(base, split), exist_ok=True)
        for pid in (1, 2, 3, 4):
            for cam in (1, 2):
                Image.new("RGB", (16, 32), (pid * 40, cam * 60, 9)).save(
                    os.path.join(base, split, f"{pid:04d}_c{cam}_{split}.jpg"))
    bad = os.path.join(base, "train", "0002_c1_train.jpg")
    with open(bad, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 2])  # truncated JPEG
    return bad


def test_unreadable_image_error_names_file_and_skip_option(root):
    bad = _generic_with_bad_image(root)
    cfg = make_cfg(root)
    cfg.DATASETS.NAMES = ("GenericReID",)
    cfg.DATASETS.GENERIC.DIR = "generic_bad"
    cfg.SOLVER.IMS_PER_BATCH = 8
    loader = build_reid_train_loader(cfg)
    with pytest.raises(DatasetError, match=r"Cannot read image .*0002_c1_train.jpg.*SKIP_BAD_IMAGES"):
        for e in range(4):
            _epoch(loader, e)
    cfg.DATASETS.SKIP_BAD_IMAGES = True
    loader = build_reid_train_loader(cfg)
    assert len(loader.dataset) == 7 and bad not in {s[0] for s in loader.dataset}
    for e in range(2):
        _epoch(loader, e)


def test_multiple_datasets_keep_identities_and_cameras_distinct(root):
    _generic_with_bad_image(root)
    cfg = make_cfg(root)
    cfg.DATASETS.NAMES = ("SyntheticReID", "GenericReID")
    cfg.DATASETS.GENERIC.DIR = "generic_bad"
    cfg.DATASETS.SKIP_BAD_IMAGES = True
    loader = build_reid_train_loader(cfg)
    assert loader.num_classes == 6 + 4 and loader.num_cameras == 3 + 2
    generic = [s for s in loader.dataset if "generic_bad" in s[0]]
    assert {s[1] for s in generic} == {6, 7, 8, 9} and {s[2] for s in generic} == {3, 4}


def test_too_few_identities_for_pk_batch(root):
    cfg = make_cfg(root)
    cfg.SOLVER.IMS_PER_BATCH = 16  # 8 identities per batch, 6 available
    with pytest.raises(ValueError, match=r"only 6 identities"):
        build_reid_train_loader(cfg)
