"""VehicleID, evaluated with random galleries (one image per identity, re-drawn per trial)."""

import os
import random
from collections import OrderedDict
from typing import Dict, List

from clipreid_plugin.config.configurable import configurable

from .bases import (DatasetError, ReIDDataset, Sample, find_dataset_dir, parse_int, read_list_file,
                    register_dataset, relabel, train_split_needed)

__all__ = ["VehicleID"]

TEST_SIZES = (800, 1600, 2400)


@register_dataset()
class VehicleID(ReIDDataset):
    """VehicleID: ``<ROOT>/VehicleID_V1.0/image/<name>.jpg`` and
    ``<ROOT>/VehicleID_V1.0/train_test_split/{train_list.txt,test_list_<N>.txt}``
    (lines ``<name> <vehicle id>``, N = 800/1600/2400 chosen by DATASETS.VEHICLEID.TEST_SIZE).

    Train: every image of the train list (ordered by vehicle id, relabelled), camid 0, view 1.
    Test: ``test_items()`` is the whole test list in file order with camid 0 and view 1; the
    evaluator draws the gallery (one image per identity) itself per trial, hence
    ``random_gallery = True`` and num_query = 0 from the test loader. ``query``/``gallery``
    hold one such draw (seed DATASETS.VEHICLEID.SPLIT_SEED; gallery camid 1 so the same-camera
    filter never removes the true match, as the reference) for statistics and ad-hoc use.
    """

    kind = "vehicle"
    random_gallery = True
    dataset_dirs = ("VehicleID_V1.0", "VehicleID")

    @configurable
    def __init__(self, root: str, test_size: int = 800, split_seed: int = 1234):
        """
        Args:
            root: DATASETS.ROOT_DIR.
            test_size: 800, 1600 or 2400 (which test list to use).
            split_seed: seed of the one query/gallery draw stored in ``query``/``gallery``.
        """
        if test_size not in TEST_SIZES:
            raise DatasetError(f"DATASETS.VEHICLEID.TEST_SIZE must be one of {TEST_SIZES}, "
                               f"got {test_size}.")
        test_list = f"train_test_split/test_list_{test_size}.txt"
        self.dataset_dir = find_dataset_dir(
            root, self.dataset_dirs, ["image", "train_test_split/train_list.txt", test_list],
            self.name, ["train_test_split/train_list.txt"])
        train = self._parse(os.path.join(self.dataset_dir, "train_test_split/train_list.txt")) \
            if train_split_needed() else []
        train.sort(key=lambda s: s[1])  # stable: ascending vehicle id, list order within an id
        self.test = self._parse(os.path.join(self.dataset_dir, test_list))
        by_id = OrderedDict()
        for s in self.test:
            by_id.setdefault(s[1], []).append(s)
        rng = random.Random(split_seed)
        query, gallery = [], []
        for items in by_id.values():
            pick = rng.choice(items)
            gallery.append((pick[0], pick[1], 1, pick[3]))
            query.extend(s for s in items if s is not pick)
        super().__init__(relabel(train), query, gallery)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        """Build from DATASETS.ROOT_DIR, DATASETS.VEHICLEID.TEST_SIZE and .SPLIT_SEED."""
        return {"root": cfg.DATASETS.ROOT_DIR, "test_size": cfg.DATASETS.VEHICLEID.TEST_SIZE,
                "split_seed": cfg.DATASETS.VEHICLEID.SPLIT_SEED}

    def test_items(self) -> List[Sample]:
        """Returns: the whole test split (file order, camid 0): the evaluator draws galleries."""
        return list(self.test)

    def _parse(self, list_path: str) -> List[Sample]:
        img_dir = os.path.join(self.dataset_dir, "image")
        samples = []
        for lineno, (name, vid) in read_list_file(list_path, self.name, 2):
            pid = parse_int(vid, list_path, lineno, "the vehicle id", self.name)
            if pid < 0:
                raise DatasetError(f"{self.name}: {list_path}, line {lineno}: negative vehicle id.")
            if not name.lower().endswith((".jpg", ".png")):
                name += ".jpg"
            samples.append((os.path.join(img_dir, name), pid, 0, 1))
        if not samples:
            raise DatasetError(f"{self.name}: list file {list_path} has no entries.")
        return samples
