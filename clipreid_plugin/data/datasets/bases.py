"""Base class of every ReID dataset: three sample lists, statistics, readable parse errors.

A dataset object only *lists* images; reading and transforming them is the loader's job
(:mod:`clipreid_plugin.data.image_dataset`). Each split is a list of ``(img_path, pid, camid, viewid)``
tuples with an absolute path, the raw identity, a 0-based camera id and a view id.
"""

import contextlib
import glob
import logging
import os
from typing import Any, Dict, Iterable, Iterator, List, Sequence, Tuple

from tabulate import tabulate

from clipreid_plugin.utils.errors import ToolkitError
from clipreid_plugin.utils.registry import Registry

__all__ = ["DATASET_REGISTRY", "DatasetError", "ReIDDataset", "Sample", "register_dataset",
           "read_list_file", "parse_int",
           "find_dataset_dir", "list_images", "relabel", "test_splits_only", "train_split_needed"]

logger = logging.getLogger(__name__)

DATASET_REGISTRY = Registry("DATASET", config_keys=["DATASETS.TESTS"], training_keys=["DATASETS.NAMES"])
DATASET_REGISTRY.__doc__ = (
    "Registry for datasets; a registered class is built as ``cls(cfg)`` (the configurable convention). "
    "Registered names are the config names of DATASETS.NAMES / DATASETS.TESTS."
)

Sample = Tuple[str, int, int, int]  # (img_path, pid, camid, viewid)

# (class, folder, split, counts) of the dataset splits already logged by this process (ReIDDataset.show_summary)
_SHOWN_SUMMARIES = set()

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class DatasetError(ToolkitError, RuntimeError):
    """A dataset folder, list file or image is missing or malformed (the message says which)."""


def register_dataset(*aliases: str):
    """Class decorator: register a dataset under its class name and under ``aliases``.

    Args:
        aliases: extra names (e.g. the reference implementation's lowercase names).

    Returns:
        The decorator.
    """

    def deco(cls):
        DATASET_REGISTRY.register(cls)
        for alias in aliases:
            DATASET_REGISTRY._do_register(alias, cls)
        return cls

    return deco


_TEST_ONLY = []


@contextlib.contextmanager
def test_splits_only() -> Iterator[None]:
    """Within this context datasets index their query and gallery only: the training split may be
    absent (its list is then empty). Evaluation and the test loaders use it: they never need
    training images."""
    _TEST_ONLY.append(True)
    try:
        yield
    finally:
        _TEST_ONLY.pop()


def train_split_needed() -> bool:
    """Returns: False inside :func:`test_splits_only`."""
    return not _TEST_ONLY


def find_dataset_dir(root: str, candidates: Sequence[str], required: Sequence[str],
                     dataset_name: str, train_entries: Sequence[str] = ()) -> str:
    """Return the first ``root/<candidate>`` that contains every entry of ``required``.

    Args:
        root: DATASETS.ROOT_DIR.
        candidates: sub-folder names to try, in order of preference.
        required: files/folders that must exist inside the dataset folder.
        dataset_name: used in the error message.
        train_entries: the entries of ``required`` that belong to the training split (not
            required inside :func:`test_splits_only`).

    Returns:
        Absolute path of the dataset folder.

    Raises:
        DatasetError: no candidate has the layout; the message lists what was looked for and
            what the root folder actually contains.
    """
    root = os.path.abspath(os.path.expanduser(root))
    if not train_split_needed():
        required = [r for r in required if r not in train_entries]
    for cand in candidates:
        path = os.path.join(root, cand)
        if all(os.path.exists(os.path.join(path, r)) for r in required):
            return path
    looked = "; ".join(os.path.join(root, c) for c in candidates)
    lines = [f"{dataset_name}: dataset folder not found. Looked for {looked} containing "
             f"{', '.join(required)}."]
    for cand in candidates:
        path = os.path.join(root, cand)
        if os.path.isdir(path):
            missing = [r for r in required if not os.path.exists(os.path.join(path, r))]
            lines.append(f"{path} exists but lacks {', '.join(missing)} "
                         f"(it contains: {_listing(path)}).")
    if os.path.isdir(root):
        lines.append(f"DATASETS.ROOT_DIR={root} contains: {_listing(root)}.")
    else:
        lines.append(f"DATASETS.ROOT_DIR={root} does not exist.")
    lines.append("See docs/DATASETS.md for the expected layout.")
    raise DatasetError(" ".join(lines))


def _listing(path: str, limit: int = 15) -> str:
    names = sorted(os.listdir(path))
    shown = ", ".join(names[:limit]) or "(nothing)"
    return shown + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def list_images(folder: str, dataset_name: str, recursive: bool = False) -> List[str]:
    """Sorted image files of ``folder``.

    Args:
        folder: the split folder.
        dataset_name: used in error messages.
        recursive: also look in sub-folders.

    Returns:
        Sorted absolute paths of the ``.jpg/.jpeg/.png/.bmp`` files.

    Raises:
        DatasetError: the folder is missing or holds no image.
    """
    if not os.path.isdir(folder):
        raise DatasetError(f"{dataset_name}: split folder {folder} does not exist. "
                           f"See docs/DATASETS.md for the expected layout.")
    pattern = os.path.join(folder, "**", "*") if recursive else os.path.join(folder, "*")
    files = sorted(p for p in glob.glob(pattern, recursive=recursive)
                   if p.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(p))
    if not files:
        raise DatasetError(f"{dataset_name}: split folder {folder} contains no image "
                           f"({'/'.join(IMAGE_EXTENSIONS)}).")
    return [os.path.abspath(p) for p in files]


def relabel(samples: Iterable[Sample]) -> List[Sample]:
    """Map train pids to 0..C-1 in ascending pid order.

    The reference enumerated ``set(pids)`` instead; both orders are identical for Market-1501,
    VeRi, MSMT17 and VehicleID, not for (Occluded-)Duke. The order only matters when loading
    a reference checkpoint's per-identity rows (classifier weights, prompt ``cls_ctx``).

    Args:
        samples: ``(path, pid, camid, viewid)`` tuples.

    Returns:
        The same tuples with pids relabelled.
    """
    samples = list(samples)
    mapping = {pid: i for i, pid in enumerate(sorted({s[1] for s in samples}))}
    return [(p, mapping[pid], cam, view) for p, pid, cam, view in samples]


class ReIDDataset:
    """Train/query/gallery lists of one dataset.

    Subclasses set ``train``, ``query`` and ``gallery`` in ``__init__`` (train pids relabelled
    0..C-1, query/gallery pids raw) and define the class attributes below.

    Attributes:
        kind: ``"person"`` or ``"vehicle"`` (CLIP-ReID picks its prompt template from it).
        random_gallery: True for datasets evaluated with per-trial random galleries
            (VehicleID); the test loader then yields the whole test split with num_query=0.
    """

    kind = "person"
    random_gallery = False

    def __init__(self, train: List[Sample], query: List[Sample], gallery: List[Sample]):
        self.train = train
        self.query = query
        self.gallery = gallery
        for split, items in (("train", train), ("query", query), ("gallery", gallery)):
            optional = (split == "gallery" and self.random_gallery) or (split == "train" and not train_split_needed())
            if not items and not optional:
                raise DatasetError(f"{self.name}: the {split} split is empty after parsing.")

    @property
    def name(self) -> str:
        """Returns: the canonical (class) name of the dataset."""
        return type(self).__name__

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        """The constructor arguments of a dataset from the config (default: ``root`` =
        ``DATASETS.ROOT_DIR``). A dataset's ``__init__`` is decorated with
        :func:`~clipreid_plugin.config.configurable`, so ``Market1501(cfg)`` and
        ``Market1501("/data")`` both work.

        Args:
            cfg: the config.

        Returns:
            Keyword arguments of ``__init__``.
        """
        return {"root": cfg.DATASETS.ROOT_DIR}

    def test_items(self) -> List[Sample]:
        """Returns: what the test loader yields: query then gallery (see ``random_gallery``)."""
        return list(self.query) + list(self.gallery)

    @staticmethod
    def statistics(items: Sequence[Sample]) -> Tuple[int, int, int, int]:
        """Returns: (#identities, #images, #cameras, #views) of a split."""
        return (len({s[1] for s in items}), len(items), len({s[2] for s in items}),
                len({s[3] for s in items}))

    @property
    def num_train_pids(self) -> int:
        """Returns: number of training identities."""
        return len({s[1] for s in self.train})

    def summary(self, splits: Sequence[str] = ("train", "query", "gallery")) -> str:
        """Returns: a table of identities, images, cameras and views per split (of ``splits``)."""
        rows = [[split, *self.statistics(getattr(self, split))] for split in splits]
        return f"{self.name} ({self.kind}):\n" + tabulate(
            rows, headers=["split", "identities", "images", "cameras", "views"], tablefmt="pipe")

    def show_summary(self, splits: Sequence[str] = ("train", "query", "gallery")) -> str:
        """Log :meth:`summary` of ``splits`` at INFO level, unless this process logged each of
        these splits already.

        A run builds a dataset several times (the training loader, then the test loader of every
        evaluation, which reads only query and gallery): a split already logged by this process
        for the same dataset class and folder, with the same counts, is not logged again.

        Returns:
            The table string.
        """
        text = self.summary(splits)
        folder = (type(self).__name__, str(getattr(self, "dataset_dir", "")))
        keys = {(*folder, split, self.statistics(getattr(self, split))) for split in splits}
        if not keys <= _SHOWN_SUMMARIES:
            _SHOWN_SUMMARIES.update(keys)
            logger.info(text)
        return text


def read_list_file(path: str, dataset_name: str, num_fields: int) -> List[Tuple[int, List[str]]]:
    """Read a whitespace-separated list file, checking the number of fields per line.

    Args:
        path: the list file.
        dataset_name: used in error messages.
        num_fields: fields every non-empty line must have.

    Returns:
        ``(line_number, fields)`` for every non-empty line (1-based line numbers).

    Raises:
        DatasetError: the file is missing or a line has another number of fields.
    """
    if not os.path.isfile(path):
        raise DatasetError(f"{dataset_name}: list file {path} does not exist. "
                           f"See docs/DATASETS.md for the expected layout.")
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(f"{dataset_name}: {path}, line {lineno}: not UTF-8 text ({e.reason} at byte "
                                   f"{e.start}); re-save the file as UTF-8.") from None
            fields = line.split()
            if not fields:
                continue
            if len(fields) != num_fields:
                raise DatasetError(f"{dataset_name}: {path}, line {lineno}: expected {num_fields} "
                                   f"fields, got {len(fields)}: {line.strip()!r}")
            rows.append((lineno, fields))
    return rows


def parse_int(value: str, path: str, lineno: int, what: str, dataset_name: str) -> int:
    """Returns: ``int(value)``; raises DatasetError naming file, line and field otherwise."""
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{dataset_name}: {path}, line {lineno}: {what} must be an integer, "
                           f"got {value!r}.") from None
