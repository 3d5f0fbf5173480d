"""Miniature dataset trees in the real folder layouts, with small JPEGs whose colours encode identity."""

import os

import numpy as np
from PIL import Image


def _jpeg(path, pid, cam, k):
    rng = np.random.default_rng(pid * 1000 + cam * 10 + k)
    base = np.array([(pid * 53) % 255, (pid * 97) % 255, (pid * 151) % 255], dtype=np.float64)
    img = np.clip(base + rng.normal(0, 20, size=(32, 32, 3)), 0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(img).save(path, quality=90)


def _make_tree(base, dirs, name, train_ids, test_ids, per_id):
    """Train identities 1.. over 3 cameras; test identities 100.. with one query (camera 1) and two
    gallery images (cameras 2, 3). ``name(pid, cam, k)`` gives the dataset's file name."""
    train_dir, query_dir, gallery_dir = (os.path.join(base, d) for d in dirs)
    for pid in range(1, train_ids + 1):
        for k in range(per_id):
            _jpeg(os.path.join(train_dir, name(pid, k % 3 + 1, k)), pid, k % 3, k)
    for pid in range(100, 100 + test_ids):
        _jpeg(os.path.join(query_dir, name(pid, 1, 0)), pid, 0, 0)
        for k in range(1, 3):
            _jpeg(os.path.join(gallery_dir, name(pid, k + 1, k)), pid, k, k)


def make_veri(root, train_ids=6, test_ids=4, per_id=4):
    """``root/VeRi/{image_train,image_query,image_test}`` named ``PPPP_cCCC_TTTTTTTT_0.jpg``."""
    _make_tree(os.path.join(root, "VeRi"), ("image_train", "image_query", "image_test"),
               lambda pid, cam, k: f"{pid:04d}_c{cam:03d}_{k:08d}_0.jpg", train_ids, test_ids, per_id)
    return root


def make_market(root, train_ids=6, test_ids=4, per_id=4):
    """``root/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}`` Market names."""
    _make_tree(os.path.join(root, "Market-1501-v15.09.15"), ("bounding_box_train", "query", "bounding_box_test"),
               lambda pid, cam, k: f"{pid:04d}_c{cam}s1_{k:06d}_00.jpg", train_ids, test_ids, per_id)
    return root


def make_generic(root, folder="generic", train_ids=6, test_ids=4, per_id=4):
    """``root/<folder>/{train,query,gallery}`` with Market-style names, as GenericReID reads by default."""
    _make_tree(os.path.join(root, folder), ("train", "query", "gallery"),
               lambda pid, cam, k: f"{pid:04d}_c{cam}s1_{k:06d}_00.jpg", train_ids, test_ids, per_id)
    return root
