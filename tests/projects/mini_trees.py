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


def make_veri(root, train_ids=6, test_ids=4, per_id=4):
    """``root/VeRi/{image_train,image_query,image_test}`` named ``PPPP_cCCC_TTTTTTTT_0.jpg``."""
    base = os.path.join(root, "VeRi")
    for pid in range(1, train_ids + 1):
        for k in range(per_id):
            _jpeg(os.path.join(base, "image_train", f"{pid:04d}_c{k % 3 + 1:03d}_{k:08d}_0.jpg"), pid, k % 3, k)
    for pid in range(100, 100 + test_ids):
        _jpeg(os.path.join(base, "image_query", f"{pid:04d}_c001_00000000_0.jpg"), pid, 0, 0)
        for k in range(1, 3):
            _jpeg(os.path.join(base, "image_test", f"{pid:04d}_c{k + 1:03d}_{k:08d}_0.jpg"), pid, k, k)
    return root


def make_market(root, train_ids=6, test_ids=4, per_id=4):
    """``root/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}`` Market names."""
    base = os.path.join(root, "Market-1501-v15.09.15")
    for pid in range(1, train_ids + 1):
        for k in range(per_id):
            _jpeg(os.path.join(base, "bounding_box_train", f"{pid:04d}_c{k % 3 + 1}s1_{k:06d}_00.jpg"), pid, k % 3, k)
    for pid in range(100, 100 + test_ids):
        _jpeg(os.path.join(base, "query", f"{pid:04d}_c1s1_000000_00.jpg"), pid, 0, 0)
        for k in range(1, 3):
            _jpeg(os.path.join(base, "bounding_box_test", f"{pid:04d}_c{k + 1}s1_{k:06d}_00.jpg"), pid, k, k)
    return root
