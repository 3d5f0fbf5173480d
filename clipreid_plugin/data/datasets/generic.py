"""GenericReID: a user's own data, one folder per split, labels from file names or a CSV file."""

import csv
import os
import re
from typing import Dict, List

from clipreid_plugin.config.configurable import configurable

from .bases import DatasetError, ReIDDataset, Sample, list_images, register_dataset, relabel, train_split_needed

__all__ = ["GenericReID"]

SPLITS = ("train", "query", "gallery")


@register_dataset()
class GenericReID(ReIDDataset):
    """A user's dataset in ``<ROOT>/<DATASETS.GENERIC.DIR>/`` with one entry per split.

    For each split (``train``, ``query``, ``gallery``) either

    * ``<split>.csv`` exists: header ``path,pid,camid`` (optional ``viewid`` column); ``path``
      relative to the dataset folder; or
    * the folder ``<split>/`` (searched recursively) holds images whose *file names* match
      DATASETS.GENERIC.PATTERN, a regex with named groups ``pid`` and ``camid`` (optional
      ``viewid``); the default matches Market-style ``0002_c1s1_000451_03.jpg``.

    Camera numbers (from CSV or file name) minus DATASETS.GENERIC.CAMID_OFFSET must be >= 0
    (default offset 1: cameras counted from 1). pid -1 marks junk images (dropped); pid 0 is a
    valid identity. Train pids are relabelled 0..C-1 in ascending order.
    """

    kind = "person"

    @configurable
    def __init__(self, root: str, folder: str = "generic",
                 pattern: str = r"(?P<pid>-?\d+)_c(?P<camid>\d+)", camid_offset: int = 1,
                 kind: str = "person"):
        """
        Args:
            root: DATASETS.ROOT_DIR.
            folder: dataset folder inside ``root``.
            pattern: file-name regex with groups ``pid`` and ``camid`` (optional ``viewid``).
            camid_offset: subtracted from every camera number.
            kind: ``"person"`` or ``"vehicle"``.
        """
        if kind not in ("person", "vehicle"):
            raise DatasetError(f"DATASETS.GENERIC.KIND must be 'person' or 'vehicle', got {kind!r}.")
        self.kind = kind
        self.dataset_dir = os.path.join(os.path.abspath(root), folder)
        try:
            self.pattern = re.compile(pattern)
        except re.error as e:
            raise DatasetError(f"DATASETS.GENERIC.PATTERN {pattern!r} is not a valid regex: {e}") from None
        if not {"pid", "camid"} <= set(self.pattern.groupindex):
            raise DatasetError(f"DATASETS.GENERIC.PATTERN {pattern!r} needs named groups "
                               f"(?P<pid>...) and (?P<camid>...).")
        self.camid_offset = camid_offset
        if not os.path.isdir(self.dataset_dir):
            raise DatasetError(
                f"{self.name}: folder {self.dataset_dir} does not exist (DATASETS.ROOT_DIR/"
                f"DATASETS.GENERIC.DIR). It must hold train/, query/, gallery/ image folders or "
                f"train.csv, query.csv, gallery.csv; see docs/DATASETS.md.")
        train, query, gallery = (self._parse_split(s) if s != "train" or train_split_needed() else []
                                 for s in SPLITS)
        super().__init__(relabel(train), query, gallery)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        """Build from DATASETS.ROOT_DIR and the DATASETS.GENERIC keys."""
        g = cfg.DATASETS.GENERIC
        return {"root": cfg.DATASETS.ROOT_DIR, "folder": g.DIR, "pattern": g.PATTERN,
                "camid_offset": g.CAMID_OFFSET, "kind": g.KIND}

    def _camid(self, value: int, where: str) -> int:
        camid = value - self.camid_offset
        if camid < 0:
            raise DatasetError(f"{self.name}: {where}: camera {value} minus "
                               f"DATASETS.GENERIC.CAMID_OFFSET={self.camid_offset} is negative; "
                               f"set DATASETS.GENERIC.CAMID_OFFSET 0 if cameras count from 0.")
        return camid

    def _parse_split(self, split: str) -> List[Sample]:
        csv_path = os.path.join(self.dataset_dir, split + ".csv")
        if os.path.isfile(csv_path):
            return self._parse_csv(csv_path)
        samples = []
        for path in list_images(os.path.join(self.dataset_dir, split), self.name, recursive=True):
            m = self.pattern.search(os.path.basename(path))
            if m is None:
                raise DatasetError(f"{self.name}: file name of {path} does not match "
                                   f"DATASETS.GENERIC.PATTERN {self.pattern.pattern!r}.")
            try:
                pid = int(m.group("pid"))
                view = int(m.group("viewid") or 0) if "viewid" in self.pattern.groupindex else 0
                cam = int(m.group("camid"))
            except ValueError as e:
                raise DatasetError(f"{self.name}: file name of {path}: the groups of DATASETS.GENERIC.PATTERN "
                                   f"{self.pattern.pattern!r} must capture integers ({e}).") from None
            if pid == -1:
                continue
            samples.append((path, pid, self._camid(cam, path), view))
        return samples

    def _parse_csv(self, csv_path: str) -> List[Sample]:
        samples = []
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"path", "pid", "camid"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"{self.name}: {csv_path}, line 1: header must name columns "
                                   f"path,pid,camid[,viewid]; missing {', '.join(sorted(missing))}.")
            for row in reader:
                where = f"{csv_path}, line {reader.line_num}"
                try:
                    pid, cam = int(row["pid"]), int(row["camid"])
                    view = int(row["viewid"]) if row.get("viewid") not in (None, "") else 0
                except (TypeError, ValueError):
                    raise DatasetError(f"{self.name}: {where}: pid, camid and viewid must be "
                                       f"integers, got {dict(row)}.") from None
                if pid == -1:
                    continue
                path = os.path.join(self.dataset_dir, row["path"])
                samples.append((path, pid, self._camid(cam, where), view))
        if not samples:
            raise DatasetError(f"{self.name}: {csv_path} lists no image.")
        return samples
