"""Embed your own images with a trained model, save/load feature files, rank a gallery.

Example::

    from clipreid_plugin.usertools import FeatureExtractor, GalleryIndex, save_features, search
    ex = FeatureExtractor.from_checkpoint("output/run/model_final.pth")  # or (config, weights)
    gallery, gallery_paths = ex.embed("my_gallery/")
    query, query_paths = ex.embed(["person.jpg"])
    feats = ex([pil_image, hwc_uint8_rgb_array, "crop.png"])        # in memory too: (3, D) tensor
    indices, distances = search(query, gallery, topk=5)          # exact
    index = GalleryIndex(gallery, "ivf")                           # faiss ([faiss] extra), built once
    indices, distances = search(query, None, topk=5, index=index)  # approximate, much faster on millions

The images go through the config's *test* transform (``INPUT.SIZE_TEST``, normalisation) and
the model's eval forward, exactly as in evaluation (``TEST.FLIP.ENABLED`` included), whether
they come as files, PIL images or arrays; ranking
uses the evaluator's distance code (``TEST.METRIC`` semantics, squared Euclidean by default).
"""

import logging
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from clipreid_plugin.config import CfgNode
from clipreid_plugin.data.decode import read_image
from clipreid_plugin.data.image_dataset import collate_batch
from clipreid_plugin.data.transforms import build_transforms
from clipreid_plugin.evaluation import DatasetEvaluator, inference_on_dataset
from clipreid_plugin.evaluation.distance import (
    as_tensor,
    check_features,
    choose_device,
    normalize_features,
    pairwise_distance_chunks,
)
from clipreid_plugin.evaluation.rank import distance_keys
from clipreid_plugin.utils.errors import InputFileError, InvalidInputError
from clipreid_plugin.utils.file_io import atomic_write

if TYPE_CHECKING:
    from .index import GalleryIndex

from clipreid_plugin.config import load_cfg
from clipreid_plugin.engine import build_evaluation_model
from clipreid_plugin.modeling import build_model

from .index import GalleryIndex

__all__ = ["IMAGE_EXTENSIONS", "list_images", "load_config", "FeatureExtractor", "save_features",
           "load_features", "search"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(inputs: Union[str, Sequence[str]]) -> List[str]:
    """Expand folders (recursively, sorted) and keep image files, in the order given.

    Args:
        inputs: a folder, an image file, or a list of both.

    Returns:
        Image paths (files with one of ``IMAGE_EXTENSIONS``, case-insensitive).

    Raises:
        FileNotFoundError: an input does not exist, or no image was found.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths: List[str] = []
    for item in map(str, items):
        if os.path.isdir(item):
            found = sorted(os.path.join(root, f) for root, _, files in os.walk(item) for f in files
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise InputFileError(f"No image found under folder {item} (looked for "
                                     f"{', '.join(IMAGE_EXTENSIONS)} files, recursively).")
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise InputFileError(f"Input {item} is neither an image file nor a folder.")
    if not paths:
        raise InputFileError("No input images given.")
    return paths


def load_config(cfg_or_file: Union[CfgNode, str], opts: Optional[Sequence[str]] = None) -> CfgNode:
    """Returns: a frozen config from a CfgNode, a YAML file (e.g. a run's ``config.yaml``) or a
    checkpoint of this toolkit (its stored config), with ``opts`` (``["KEY", "VALUE", ...]``)
    applied, exactly as ``tools/train_net.py`` builds it."""
    if isinstance(cfg_or_file, CfgNode):
        cfg = cfg_or_file.clone()
        cfg.defrost()
        cfg.merge_from_list(list(opts or []))
        cfg.freeze()
        return cfg
    if not os.path.isfile(str(cfg_or_file)):
        raise InputFileError(f"Config file {cfg_or_file} not found (pass the run's OUTPUT_DIR/config.yaml, its "
                             f"model_final.pth, or a config from configs/ or projects/*/configs/).")
    return load_cfg(str(cfg_or_file), list(opts or []))


class _Collector(DatasetEvaluator):
    """Keeps the embeddings and paths ``inference_on_dataset`` feeds it, in order."""

    def reset(self) -> None:
        self.feats: List[torch.Tensor] = []
        self.paths: List[str] = []

    def process(self, inputs, outputs: torch.Tensor) -> None:
        self.feats.append(outputs.detach().float().cpu())
        self.paths.extend(inputs["img_paths"])

    def evaluate(self):
        return None


class _ImageItems(Dataset):
    """Sample dicts (the test loader's format) of image paths, PIL images, or preprocessed (3, H, W)
    tensors; paths and PIL images go through ``transform`` (the test transform)."""

    def __init__(self, items: Sequence[Any], names: Sequence[str], camids: Sequence[int], transform):
        self.items, self.names, self.camids, self.transform = list(items), list(names), list(camids), transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Dict:
        item = self.items[i]
        if isinstance(item, str):
            item = read_image(item)
        image = item if isinstance(item, torch.Tensor) else self.transform(item)
        return {"images": image, "targets": 0, "camids": self.camids[i], "viewids": 0, "img_paths": self.names[i]}


def _describe(x: Any) -> str:
    """The type of an input and, for arrays and tensors, its shape and dtype (never its values)."""
    kind = f"{type(x).__module__}.{type(x).__qualname__}".replace("builtins.", "")
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return f"{kind} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return kind


def _image_items(inputs: Any) -> Tuple[List[Any], List[str]]:
    """Validate ``inputs`` (see :meth:`FeatureExtractor.embed`) and turn them into dataset items
    (paths, PIL images, preprocessed (3, H, W) tensors) with a name each."""
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() != 4 or inputs.shape[1] != 3 or not inputs.is_floating_point() or inputs.shape[0] == 0:
            raise InvalidInputError(f"A tensor input must be a non-empty (B, 3, H, W) float batch, preprocessed as "
                                    f"in testing; got a {_describe(inputs)}. Pass uint8 (H, W, 3) arrays or PIL "
                                    f"images to have them resized and normalised.")
        return list(inputs.detach().float().cpu().unbind(0)), [f"<tensor {i}>" for i in range(inputs.shape[0])]
    single = isinstance(inputs, (str, os.PathLike, Image.Image, np.ndarray))
    listed = [inputs] if single else inputs
    if not isinstance(listed, (list, tuple)):
        raise InvalidInputError(f"Cannot embed a {_describe(inputs)}: give an image path or folder, a PIL image, a "
                                f"uint8 (H, W, 3) RGB array, a list of these, or a (B, 3, H, W) float tensor.")
    if not listed:
        raise InputFileError("No input images given.")
    items: List[Any] = []
    names: List[str] = []
    for i, x in enumerate(listed):
        if isinstance(x, (str, os.PathLike)):
            paths = list_images(str(x))
            items.extend(paths)
            names.extend(paths)
        elif isinstance(x, Image.Image):
            items.append(x)
            names.append(f"<PIL image {i}>")
        elif isinstance(x, np.ndarray) and x.ndim == 3 and x.shape[2] == 3 and x.dtype == np.uint8 and x.size:
            items.append(Image.fromarray(x, "RGB"))
            names.append(f"<array {i}>")
        else:
            what = "input" if single else f"input {i}"
            raise InvalidInputError(f"Cannot embed {what}, a {_describe(x)}: give image paths or folders, PIL images, "
                                    f"uint8 (H, W, 3) RGB arrays (any size), or a (B, 3, H, W) float tensor.")
    return items, names


class FeatureExtractor:
    """A trained model plus its test transform, for embedding arbitrary images.

    Built like ``--eval-only`` (:func:`~clipreid_plugin.engine.build_evaluation_model`): no
    training data and no pretrained weights file are needed, only the checkpoint.

    Args:
        cfg_or_file: the run's config (CfgNode or YAML path; ``OUTPUT_DIR/config.yaml`` of a
            training run has every data-dependent key filled in); None = the config stored in
            ``weights`` (a checkpoint written by this toolkit's trainer).
        weights: checkpoint to load (this project's ``model_*.pth``, a plain state dict, or a
            reference CLIP-ReID checkpoint); None keeps the config's initialisation
            (``MODEL.WEIGHTS`` if set, else random / pretrained backbone).
        opts: extra ``KEY VALUE`` overrides.
        device: overrides ``MODEL.DEVICE`` ("cpu", "cuda", "auto").
    """

    def __init__(self, cfg_or_file: Union[CfgNode, str, None] = None, weights: Optional[str] = None,
                 opts: Optional[Sequence[str]] = None, device: Optional[str] = None):

        opts = list(opts or []) + (["MODEL.DEVICE", device] if device else [])
        if cfg_or_file is None and not weights:
            raise InputFileError("Give the model: a checkpoint written by this toolkit (--weights, it stores its "
                                 "config), or a config (--config-file) with weights.")
        self.cfg = load_config(cfg_or_file if cfg_or_file is not None else weights, opts)
        weights = weights or self.cfg.MODEL.WEIGHTS
        if weights:
            self.model, self.cfg = build_evaluation_model(self.cfg, weights)
        else:
            logger.warning("FeatureExtractor: no weights given and MODEL.WEIGHTS is empty: the model is untrained.")
            self.model = build_model(self.cfg).eval()
        self.transform = build_transforms(self.cfg, is_train=False)

    @classmethod
    def from_checkpoint(cls, weights: str, opts: Optional[Sequence[str]] = None,
                        device: Optional[str] = None) -> "FeatureExtractor":
        """A predictor from a checkpoint alone (``model_final.pth`` of this toolkit's trainer stores
        its config).

        Args:
            weights: the checkpoint.
            opts: extra ``KEY VALUE`` overrides (e.g. ``["TEST.FLIP.ENABLED", "True"]``).
            device: overrides ``MODEL.DEVICE``.
        """
        return cls(None, weights, opts=opts, device=device)

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return next(self.model.parameters()).device

    def embed(self, inputs, batch_size: int = 64, num_workers: int = 0,
              camids: Optional[Sequence[int]] = None) -> Tuple[torch.Tensor, List[str]]:
        """Embed images with the model's eval forward (flip-averaged when TEST.FLIP.ENABLED), in
        batches on the model's device.

        Args:
            inputs: an image path, a folder (searched recursively), a PIL image, a uint8
                (H, W, 3) RGB array of any size, or a list mixing these: each image is resized
                and normalised by the config's test transform, as in evaluation. Or a
                (B, 3, H, W) float tensor already preprocessed that way (the test loader's
                batches, the ONNX graph's input), which goes to the model as it is.
            batch_size: images per forward pass.
            num_workers: DataLoader worker processes reading the images.
            camids: 0-based camera id per image (only models with SIE use it); default 0.

        Returns:
            (feats, names): (N, D) float32 CPU tensor, raw (not normalised) as the model returns
            it; for each row the image path, or ``"<array i>"`` / ``"<PIL image i>"`` /
            ``"<tensor i>"`` for an in-memory input at position i.

        Raises:
            InvalidInputError: an input of another kind or shape (the message names its type and
                shape, never its values).
            InputFileError: a path that does not exist, a folder without images.
        """
        items, names = _image_items(inputs)
        cams = [0] * len(items) if camids is None else [int(c) for c in camids]
        if len(cams) != len(items):
            raise InvalidInputError(f"camids has {len(cams)} entries for {len(items)} images; give one per image.")
        loader = DataLoader(_ImageItems(items, names, cams, self.transform), batch_size=max(1, int(batch_size)),
                            shuffle=False, num_workers=num_workers, collate_fn=collate_batch)
        collector = _Collector()
        inference_on_dataset(self.model, loader, collector, flip_test=self.cfg.TEST.FLIP.ENABLED)
        return torch.cat(collector.feats), collector.paths

    def __call__(self, inputs, batch_size: int = 64) -> torch.Tensor:
        """Returns: the (N, D) float32 CPU features of ``inputs`` (anything :meth:`embed` takes)."""
        return self.embed(inputs, batch_size=batch_size)[0]


def save_features(path: str, feats: Union[torch.Tensor, np.ndarray], paths: Sequence[str]) -> None:
    """Atomically write a feature file (``.npz``: ``feats`` (N, D) float32, ``paths`` (N,) str).

    Args:
        path: destination file (written as named; ``.npz`` by convention).
        feats: (N, D) features.
        paths: the N image paths.
    """
    arr = as_tensor(feats).detach().float().cpu().numpy()
    if arr.ndim != 2 or arr.shape[0] != len(paths):
        raise InvalidInputError(f"feats must be (N, D) with one row per path: got {arr.shape} for {len(paths)} paths.")
    atomic_write(path, lambda f: np.savez(f, feats=arr, paths=np.asarray(list(paths), dtype=str)), mode="wb")


def load_features(path: str) -> Tuple[torch.Tensor, List[str]]:
    """Read a file written by :func:`save_features`.

    Returns:
        (feats (N, D) float32 tensor, paths).
    """
    if not os.path.isfile(path):
        raise InputFileError(f"Feature file {path} not found (create it with tools/extract.py).")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("feats", "paths") if k not in data.files]
        if missing:
            raise InvalidInputError(f"{path} is not a feature file: missing array(s) {missing} (found {data.files}); "
                                    f"create it with tools/extract.py.")
        if data["feats"].shape[0] == 0:
            raise InvalidInputError(f"Feature file {path} holds no features (0 images): extract it again from "
                                    f"images with tools/extract.py.")
        return torch.from_numpy(data["feats"].astype(np.float32)), [str(p) for p in data["paths"]]


def search(query_feats, gallery_feats, topk: int = 10, metric: str = "euclidean", normalize: bool = True,
           memory_budget_mb: float = 1024, device: Optional[Union[str, torch.device]] = None,
           index: Union[None, str, "GalleryIndex"] = None, **index_options) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rank the gallery for each query, nearest first.

    Exact by default: distances are the evaluator's (``pairwise_distance_chunks``: squared
    Euclidean ``|q|^2+|g|^2-2q.g`` or ``1 - cos``), computed a block of queries at a time; ties
    go to the lower gallery index, as in evaluation. With ``index`` a faiss index answers
    instead (the ``[faiss]`` extra; see :mod:`clipreid_plugin.usertools.index`): faster on large
    galleries, approximate for ``"ivf"`` / ``"ivfpq"``, same distance definitions.

    Args:
        query_feats: (Q, D) features (tensor or array).
        gallery_feats: (G, D) features (may be None when ``index`` is a built :class:`GalleryIndex`).
        topk: neighbours per query (clipped to G).
        metric: "euclidean" or "cosine".
        normalize: L2-normalise both sides first (TEST.FEAT_NORM, on by default in evaluation).
        memory_budget_mb: bounds the distance block size (exact search).
        device: where to compute (default: the features' device, else CUDA when available); for
            an index: "auto" (GPUs when faiss has them), "cpu" or "cuda".
        index: None or ``"exact"`` (exact search), ``"flat"``, ``"ivf"``, ``"ivfpq"`` (build that
            faiss index over ``gallery_feats`` with ``metric``, ``normalize`` and
            ``index_options``), or a built :class:`GalleryIndex` (its own metric and
            normalisation apply; build it once to answer many queries).
        index_options: ``nlist``, ``nprobe``, ``pq_m``, ``pq_bits``, ``train_size``, ``seed`` of
            :class:`GalleryIndex`.

    Returns:
        (indices, distances): (Q, k) int64 gallery indices and (Q, k) float32 distances, on the CPU.
    """
    if index is not None and index != "exact":
        if isinstance(index, str):
            dev = str(device) if device is not None else "auto"
            index = GalleryIndex(gallery_feats, index, metric=metric, normalize=normalize,
                                 device="cuda" if dev.startswith("cuda") else dev, **index_options)
        elif index_options:
            raise InvalidInputError(f"index options {sorted(index_options)} apply only when search builds the index.")
        return index.search(query_feats, topk)
    if index_options:
        raise InvalidInputError(f"index options {sorted(index_options)} need an index (index='flat', 'ivf' or 'ivfpq').")
    qf, gf = as_tensor(query_feats, torch.float32), as_tensor(gallery_feats, torch.float32)
    check_features(qf, "query features")
    check_features(gf, "gallery features")
    if qf.shape[1] != gf.shape[1]:
        raise InvalidInputError(f"Query features have dimension {qf.shape[1]} but gallery features {gf.shape[1]}: "
                                f"they were extracted with different models.")
    if topk < 1:
        raise InvalidInputError(f"topk must be >= 1, got {topk}.")
    dev = choose_device(qf, gf, device=device)
    qf, gf = qf.to(dev), gf.to(dev)
    if normalize:
        qf, gf = normalize_features(qf), normalize_features(gf)
    k = min(int(topk), gf.shape[0])
    indices, distances = [], []
    for _, dist in pairwise_distance_chunks(qf, gf, metric, memory_budget_mb=memory_budget_mb):
        top = torch.topk(distance_keys(dist), k, dim=1, largest=False, sorted=True).indices
        indices.append(top.cpu())
        distances.append(torch.gather(dist, 1, top).cpu())
    return torch.cat(indices), torch.cat(distances)
