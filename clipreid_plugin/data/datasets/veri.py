"""VeRi-776, with orientation (view) labels from the VehicleReIDKeyPointData files."""

import logging
import os
import re
from typing import Dict, List, Optional

from clipreid_plugin.config.configurable import configurable
from clipreid_plugin.utils.logger import log_once

from .bases import (DatasetError, ReIDDataset, Sample, find_dataset_dir, list_images, parse_int,
                    read_list_file, register_dataset, relabel, train_split_needed)

__all__ = ["VeRi"]

logger = logging.getLogger(__name__)

_VERI_RE = re.compile(r"([-\d]+)_c(\d+)")
KEYPOINT_FILES = ("keypoint_train.txt", "keypoint_test.txt")


def read_orientation_map(path: str, dataset_name: str) -> Dict[str, int]:
    """Read a VehicleReIDKeyPointData file: ``VeRi/<split>/<name>.jpg x1 y1 ... x20 y20 orientation``.

    Args:
        path: keypoint_train.txt or keypoint_test.txt.
        dataset_name: used in error messages.

    Returns:
        basename -> orientation 0..7 (a later line for the same name wins, as the reference).
    """
    views = {}
    for lineno, fields in read_list_file(path, dataset_name, 42):
        view = parse_int(fields[-1], path, lineno, "the orientation (last field)", dataset_name)
        if not 0 <= view <= 7:
            raise DatasetError(f"{dataset_name}: {path}, line {lineno}: orientation {view} is "
                               f"not in 0..7.")
        views[os.path.basename(fields[0])] = view
    return views


@register_dataset("veri")
class VeRi(ReIDDataset):
    """VeRi-776: ``<ROOT>/VeRi/{image_train,image_query,image_test}`` (names ``0001_c001_...jpg``).

    View ids: when ``keypoint_train.txt`` and ``keypoint_test.txt`` are found (in ``<ROOT>/VeRi/``
    or ``<ROOT>/``), each image takes its orientation label (train map first, then test map)
    and images without a label are dropped, as the reference (train 37,715, query 1,677,
    gallery 11,578; 8 views). Without the files every view id is 0 (one view) and every image
    is kept. Expected ids: train 576, query 200, gallery 200; 20 cameras.
    """

    kind = "vehicle"
    dataset_dirs = ("VeRi", "VeRi-776", "veri")
    splits = ("image_train", "image_query", "image_test")

    @configurable
    def __init__(self, root: str):
        """
        Args:
            root: DATASETS.ROOT_DIR.
        """
        self.dataset_dir = find_dataset_dir(root, self.dataset_dirs, self.splits, self.name, self.splits[:1])
        views = self._load_views(root)
        train, query, gallery = (self._parse(os.path.join(self.dataset_dir, s), views)
                                 if i or train_split_needed() else [] for i, s in enumerate(self.splits))
        super().__init__(relabel(train), query, gallery)

    def _load_views(self, root: str) -> Optional[List[Dict[str, int]]]:
        for folder in (self.dataset_dir, os.path.abspath(root)):
            found = [os.path.join(folder, f) for f in KEYPOINT_FILES]
            present = [os.path.isfile(p) for p in found]
            if all(present):
                return [read_orientation_map(p, self.name) for p in found]
            if any(present):
                missing = found[present.index(False)]
                raise DatasetError(f"{self.name}: found {found[present.index(True)]} but not "
                                   f"{missing}; view labels need both keypoint files (or neither).")
        # once per process: a run builds the dataset for its keys, its loader and every evaluation
        log_once(logger, f"{self.name}: no {' / '.join(KEYPOINT_FILES)} in {self.dataset_dir} or "
                         f"{root}; all view ids are 0 and no image is dropped.", logging.WARNING)
        return None

    def _parse(self, folder: str, views: Optional[List[Dict[str, int]]]) -> List[Sample]:
        samples, dropped = [], 0
        for path in list_images(folder, self.name):
            m = _VERI_RE.search(os.path.basename(path))
            if m is None:
                raise DatasetError(f"{self.name}: cannot parse identity/camera from {path}; "
                                   f"expected names like 0001_c001_00016450_0.jpg.")
            pid, cam = int(m.group(1)), int(m.group(2))
            if pid == -1:
                continue
            if not (0 <= pid <= 776 and 1 <= cam <= 20):
                raise DatasetError(f"{self.name}: {path} has identity {pid} / camera {cam}; "
                                   f"expected 0..776 and 1..20.")
            view = 0
            if views is not None:
                name = os.path.basename(path)
                view = views[0].get(name, views[1].get(name))
                if view is None:
                    dropped += 1
                    continue
            samples.append((path, pid, cam - 1, view))
        if dropped:
            log_once(logger, f"{self.name}: {folder}: dropped {dropped} images without an orientation label.")
        return samples
