"""Market-1501 (and every folder in its layout, e.g. the built-in SyntheticReID)."""

import os
import re
from typing import List

from clipreid_plugin.config.configurable import configurable

from .bases import (DatasetError, ReIDDataset, Sample, find_dataset_dir, list_images, register_dataset, relabel,
                    train_split_needed)

__all__ = ["Market1501", "parse_market_folder"]

# "0002_c1s1_000451_03.jpg": identity, then "c" and the camera number; "-1_..." is junk.
_MARKET_RE = re.compile(r"([-\d]+)_c(\d+)")


def parse_market_folder(folder: str, dataset_name: str, max_pid: int, max_cam: int,
                        view_id: int = 0) -> List[Sample]:
    """Parse one Market-style split folder.

    Junk images (pid -1) are dropped; distractors (pid 0) are kept. Files are sorted.

    Args:
        folder: split folder (``bounding_box_train``, ``query``, ``bounding_box_test``).
        dataset_name: used in error messages.
        max_pid: largest valid identity.
        max_cam: largest valid 1-based camera number.
        view_id: view id given to every image.

    Returns:
        ``(path, pid, camid, viewid)`` tuples with raw pids and 0-based camids.

    Raises:
        DatasetError: a file name does not match ``PID_cCAM...`` or is out of range.
    """
    samples = []
    for path in list_images(folder, dataset_name):
        name = os.path.basename(path)
        m = _MARKET_RE.search(name)
        if m is None:
            raise DatasetError(f"{dataset_name}: cannot parse identity/camera from {path}; "
                               f"expected names like 0002_c1s1_000451_03.jpg (PID_cCAM...).")
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1:
            continue
        if not (0 <= pid <= max_pid and 1 <= cam <= max_cam):
            raise DatasetError(f"{dataset_name}: {path} has identity {pid} / camera {cam}; "
                               f"expected 0..{max_pid} and 1..{max_cam}.")
        samples.append((path, pid, cam - 1, view_id))
    return samples


@register_dataset("market1501")
class Market1501(ReIDDataset):
    """Market-1501: ``<ROOT>/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}``.

    Expected statistics: train 751 ids / 12,936 images, query 750 / 3,368,
    gallery 751 (incl. distractor pid 0) / 15,913, 6 cameras. View id 0.
    """

    kind = "person"
    dataset_dirs = ("Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "Market-1501")
    splits = ("bounding_box_train", "query", "bounding_box_test")
    max_pid = 1501
    max_cam = 6
    view_id = 0

    @configurable
    def __init__(self, root: str):
        """
        Args:
            root: DATASETS.ROOT_DIR (the folder holding the dataset folder).
        """
        self.dataset_dir = find_dataset_dir(root, self.dataset_dirs, self.splits, self.name, self.splits[:1])
        train, query, gallery = (
            parse_market_folder(os.path.join(self.dataset_dir, s), self.name, self.max_pid,
                                self.max_cam, self.view_id) if i or train_split_needed() else []
            for i, s in enumerate(self.splits))
        super().__init__(relabel(train), query, gallery)
