"""MSMT17 (V1 and V2 layouts), parsed from its list files."""

import os
from typing import List

from clipreid_plugin.config.configurable import configurable

from .bases import (DatasetError, ReIDDataset, Sample, find_dataset_dir, parse_int, read_list_file,
                    register_dataset, train_split_needed)

__all__ = ["MSMT17"]


@register_dataset("msmt17")
class MSMT17(ReIDDataset):
    """MSMT17: ``<ROOT>/MSMT17/`` (or ``MSMT17_V1/``) with ``train/``, ``test/``, or
    ``MSMT17_V2/`` with ``mask_train_v2/``, ``mask_test_v2/``; plus ``list_train.txt``,
    ``list_val.txt``, ``list_query.txt``, ``list_gallery.txt`` (lines ``relative/path.jpg label``).

    As the reference: train = list_train + list_val (32,621 images, 1,041 ids; labels are
    already 0..K-1 and kept); camid = third ``_`` field of the file name minus 1 (15 cameras);
    view id 0. Expected: query 3,060 ids / 11,659 images, gallery 3,060 / 82,161.
    """

    kind = "person"
    layouts = (("MSMT17", "train", "test"), ("MSMT17_V1", "train", "test"),
               ("MSMT17_V2", "mask_train_v2", "mask_test_v2"))
    list_files = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")

    @configurable
    def __init__(self, root: str):
        """
        Args:
            root: DATASETS.ROOT_DIR.
        """
        train_dir = test_dir = None
        for folder, tr, te in self.layouts:
            path = os.path.join(os.path.abspath(root), folder)
            if os.path.isdir(os.path.join(path, tr if train_split_needed() else te)):
                self.dataset_dir, train_dir, test_dir = path, os.path.join(path, tr), os.path.join(path, te)
                break
        if train_dir is None:  # raises with the full list of what was looked for
            find_dataset_dir(root, [f for f, _, _ in self.layouts],
                             ["train/ (or mask_train_v2/)", "test/ (or mask_test_v2/)",
                              *self.list_files], self.name,
                             ["train/ (or mask_train_v2/)", "list_train.txt", "list_val.txt"])
        lst = {name: os.path.join(self.dataset_dir, name) for name in self.list_files}
        train = (self._parse(lst["list_train.txt"], train_dir)
                 + self._parse(lst["list_val.txt"], train_dir)) if train_split_needed() else []
        labels = sorted({s[1] for s in train})
        if train and labels != list(range(len(labels))):
            raise DatasetError(f"{self.name}: train labels in list_train.txt + list_val.txt must "
                               f"be 0..K-1; found {len(labels)} labels ranging "
                               f"{labels[0]}..{labels[-1]}.")
        query = self._parse(lst["list_query.txt"], test_dir)
        gallery = self._parse(lst["list_gallery.txt"], test_dir)
        super().__init__(train, query, gallery)

    def _parse(self, list_path: str, img_dir: str) -> List[Sample]:
        samples = []
        for lineno, (rel, label) in read_list_file(list_path, self.name, 2):
            pid = parse_int(label, list_path, lineno, "the label", self.name)
            parts = os.path.basename(rel).split("_")
            cam = parse_int(parts[2] if len(parts) > 2 else "", list_path, lineno,
                            "the camera (third '_' field of the file name)", self.name)
            if cam < 1:
                raise DatasetError(f"{self.name}: {list_path}, line {lineno}: camera {cam} < 1.")
            samples.append((os.path.join(img_dir, rel), pid, cam - 1, 0))
        return samples
