"""Approximate gallery search with faiss (the ``[faiss]`` extra): flat, IVF and IVF-PQ indexes.

Exact search (:func:`clipreid_plugin.usertools.search` without an index) compares every query
with every gallery item; it is the default and what evaluation does. For galleries of millions
of crops a faiss index answers queries faster, at some recall:

* ``flat``: exact search by faiss (BLAS); same neighbours as the exact path up to ties.
* ``ivf``: inverted file: the gallery is split into ``nlist`` k-means cells; a query visits
  the ``nprobe`` nearest cells only. Distances are exact for the items visited.
* ``ivfpq``: IVF whose vectors are stored product-quantised (``pq_m`` sub-vectors of
  ``pq_bits`` bits: 64 bytes per item by default instead of 4 D); distances are approximate.

Distances keep the exact path's meaning: squared Euclidean on (by default) L2-normalised
features, or ``1 - cosine``. With GPUs and a GPU build of faiss (``faiss.get_num_gpus() > 0``)
the index moves to the GPUs when ``device`` is ``"auto"`` or ``"cuda"``.
"""

import logging
import math
import time
from typing import Optional, Tuple

import numpy as np
import torch

from clipreid_plugin.evaluation.distance import METRICS, as_tensor, check_features, normalize_features
from clipreid_plugin.utils.errors import InvalidInputError, MissingDependencyError
from clipreid_plugin.utils.optional import import_optional

__all__ = ["INDEX_KINDS", "NLIST_RULE", "require_faiss", "default_nlist", "GalleryIndex"]

logger = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivf", "ivfpq")
# the GalleryIndex options each kind reads (the others are errors when given)
_KIND_OPTIONS = {"flat": (), "ivf": ("nlist", "nprobe", "train_size"),
                 "ivfpq": ("nlist", "nprobe", "pq_m", "pq_bits", "train_size")}


def require_faiss():
    """Returns: the ``faiss`` module.

    Raises:
        MissingDependencyError: faiss is not installed (the message names the extra).
    """
    return import_optional("faiss", "An indexed gallery search (--index / index=)", "faiss",
                           "faiss-cpu; faiss-gpu for GPUs", note="Exact search needs nothing.")


# the rule of default_nlist, as tools/search.py --help and docs/TOOLS.md state it
NLIST_RULE = "the power of two nearest sqrt(N), at most N/39 (k-means wants 39 points per cell), at least 1"


def default_nlist(num_items: int) -> int:
    """Returns: IVF cells for a gallery of ``num_items``: :data:`NLIST_RULE` (1024 for a million
    items: k-means over that many cells trains in seconds on a CPU; faiss suggests up to
    16 sqrt(N) when build time does not matter)."""
    if num_items < 39:
        return 1
    target = math.sqrt(num_items)
    nlist = 2 ** int(round(math.log2(target)))
    return int(max(1, min(nlist, num_items // 39)))


def _as_float32(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)


class GalleryIndex:
    """A faiss index over a gallery, answering top-k queries with the exact path's distances.

    Args:
        gallery_feats: (G, D) features (tensor or array).
        kind: ``"flat"``, ``"ivf"`` or ``"ivfpq"`` (see the module docstring).
        metric: ``"euclidean"`` (squared L2) or ``"cosine"`` (1 - cosine; the vectors are
            L2-normalised inside the index whatever ``normalize`` says).
        normalize: L2-normalise gallery and queries first (TEST.FEAT_NORM; the default).
        nlist: IVF cells (default :func:`default_nlist`).
        nprobe: cells visited per query (default: nlist / 32, at least 8, at most nlist).
        pq_m: IVF-PQ sub-vectors; must divide D (default: the largest of 64, 32, 16, 8, 4, 2
            that divides D into sub-vectors of at least 8 dimensions, else 1; faiss trains
            sub-quantisers of fewer dimensions over 10x slower).
        pq_bits: bits per sub-vector code (default 8: 256 centroids per sub-quantiser; fewer
            for galleries too small to train 256 centroids: 39 2^bits <= G, e.g. 3 bits for
            G = 500; :meth:`summary` says so).
        train_size: vectors sampled (seeded) from the gallery to train the IVF / PQ k-means
            (default: min(G, max(64 nlist, 39 2^pq_bits))).
        device: ``"auto"`` (GPUs when this faiss has them), ``"cpu"`` or ``"cuda"``.
        seed: seed of the training sample and of faiss's k-means.

    Raises:
        InvalidInputError: among others, an option given (not None) that ``kind`` does not use
            (``nlist``, ``nprobe``, ``train_size`` for flat; ``pq_m``, ``pq_bits`` for flat and ivf).

    Attributes:
        build_seconds: wall time of training and adding the gallery.
        on_gpu: whether the index lives on GPUs.
    """

    def __init__(self, gallery_feats, kind: str = "flat", metric: str = "euclidean", normalize: bool = True,
                 nlist: Optional[int] = None, nprobe: Optional[int] = None, pq_m: Optional[int] = None,
                 pq_bits: Optional[int] = None, train_size: Optional[int] = None, device: str = "auto", seed: int = 1234):
        faiss = require_faiss()
        if kind not in INDEX_KINDS:
            raise InvalidInputError(f"Unknown index kind {kind!r}; valid: {', '.join(INDEX_KINDS)} "
                                    f"(or no index for exact search).")
        given = {"nlist": nlist, "nprobe": nprobe, "pq_m": pq_m, "pq_bits": pq_bits, "train_size": train_size}
        unused = [name for name, value in given.items() if value is not None and name not in _KIND_OPTIONS[kind]]
        if unused:
            raise InvalidInputError(f"Index option{'s' if len(unused) > 1 else ''} {', '.join(unused)} not used by "
                                    f"index kind {kind!r} (its options: {', '.join(_KIND_OPTIONS[kind]) or 'none'}).")
        if metric not in METRICS:
            raise InvalidInputError(f"Unknown metric {metric!r}; valid: {', '.join(METRICS)}.")
        if device not in ("auto", "cpu", "cuda"):
            raise InvalidInputError(f"device must be auto, cpu or cuda, got {device!r}.")
        gf = as_tensor(gallery_feats, torch.float32)
        check_features(gf, "gallery features")
        self.kind, self.metric, self.normalize = kind, metric, bool(normalize)
        self.num_items, self.dim = int(gf.shape[0]), int(gf.shape[1])
        start = time.perf_counter()
        x = _as_float32(self._prepare(gf))
        self.nlist = self.nprobe = self.pq_m = self.pq_bits = None
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        if kind == "flat":
            index = faiss.IndexFlat(self.dim, faiss_metric)
        else:
            self.nlist = int(nlist) if nlist else default_nlist(self.num_items)
            if not 1 <= self.nlist <= self.num_items:
                raise InvalidInputError(f"nlist={self.nlist} must be in 1..{self.num_items} (the gallery size).")
            quantizer = faiss.IndexFlat(self.dim, faiss_metric)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss_metric)
            else:
                self.pq_m = int(pq_m) if pq_m else self._default_pq_m(self.dim)
                if self.dim % self.pq_m:
                    raise InvalidInputError(f"pq_m={self.pq_m} must divide the feature dimension {self.dim}.")
                self.pq_bits = int(pq_bits) if pq_bits else int(min(8, max(1, math.floor(math.log2(
                    max(self.num_items, 78) / 39)))))
                index = faiss.IndexIVFPQ(quantizer, self.dim, self.nlist, self.pq_m, self.pq_bits, faiss_metric)
            index.cp.seed = seed
            if kind == "ivfpq":
                index.pq.cp.seed = seed  # PQ sub-quantiser k-means
            wanted = train_size or max(64 * self.nlist, 39 * 2 ** self.pq_bits if kind == "ivfpq" else 0)
            n_train = min(self.num_items, int(wanted))
            sample = np.random.default_rng(seed).choice(self.num_items, n_train, replace=False) \
                if n_train < self.num_items else slice(None)
            index.train(x[sample])
            self.nprobe = min(self.nlist, int(nprobe) if nprobe else max(8, self.nlist // 32))
            if not 1 <= self.nprobe:
                raise InvalidInputError(f"nprobe={nprobe} must be >= 1.")
            index.nprobe = self.nprobe
        self.on_gpu = False
        if device != "cpu":
            gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
            if gpus > 0:
                index = faiss.index_cpu_to_all_gpus(index)
                self.on_gpu = True
            elif device == "cuda":
                raise MissingDependencyError("device='cuda' needs a GPU build of faiss with visible GPUs "
                                             "(pip install faiss-gpu; faiss.get_num_gpus() is 0 here).")
        index.add(x)
        self.index = index
        self.build_seconds = time.perf_counter() - start
        self._bits_given = pq_bits is not None
        logger.info(self.summary())

    def summary(self) -> str:
        """Returns: one line describing the index: kind, size, cells, PQ codes (saying when the
        gallery was too small for 8-bit codes), build time."""
        text = (f"faiss {self.kind} index over {self.num_items} x {self.dim} features, built in "
                f"{self.build_seconds:.1f} s" + (f"; nlist {self.nlist}, nprobe {self.nprobe}" if self.nlist else ""))
        if self.pq_m:
            text += f"; {self.pq_m} x {self.pq_bits}-bit PQ codes"
            if self.pq_bits < 8 and not self._bits_given:
                text += (f" (not 8-bit: {self.num_items} items train at most {2 ** self.pq_bits} centroids per "
                         f"sub-quantiser at 39 points each; 8-bit codes need {39 * 256} items)")
        return text + (" on GPU" if self.on_gpu else "") + "."

    @staticmethod
    def _default_pq_m(dim: int) -> int:
        for m in (64, 32, 16, 8, 4, 2):
            if dim % m == 0 and dim // m >= 8:
                return m
        return 1

    def set_nprobe(self, nprobe: int) -> None:
        """Visit ``nprobe`` cells per query from now on (IVF kinds only; more = higher recall, slower).

        Args:
            nprobe: 1..nlist.
        """
        if self.nlist is None:
            raise InvalidInputError(f"nprobe applies to IVF indexes, not {self.kind!r}.")
        if not 1 <= int(nprobe) <= self.nlist:
            raise InvalidInputError(f"nprobe={nprobe} must be in 1..nlist={self.nlist}.")
        self.nprobe = int(nprobe)
        if self.on_gpu:
            require_faiss().GpuParameterSpace().set_index_parameter(self.index, "nprobe", self.nprobe)
        else:
            self.index.nprobe = self.nprobe

    def _prepare(self, feats: torch.Tensor) -> torch.Tensor:
        if self.normalize or self.metric == "cosine":
            return normalize_features(feats)
        return feats

    def search(self, query_feats, topk: int = 10) -> Tuple[torch.Tensor, torch.Tensor]:
        """Top-k gallery items of each query, nearest first.

        Args:
            query_feats: (Q, D) features (prepared like the gallery: normalised when it was).
            topk: neighbours per query (clipped to the gallery size).

        Returns:
            (indices, distances): (Q, k) int64 and (Q, k) float32 CPU tensors, distances as the
            exact path defines them. An IVF search that finds fewer than k items in the cells it
            visits pads with index -1 and distance inf.
        """
        qf = as_tensor(query_feats, torch.float32)
        check_features(qf, "query features")
        if qf.shape[1] != self.dim:
            raise InvalidInputError(f"Query features have dimension {qf.shape[1]} but the index {self.dim}: "
                                    f"they were extracted with different models.")
        if topk < 1:
            raise InvalidInputError(f"topk must be >= 1, got {topk}.")
        k = min(int(topk), self.num_items)
        scores, indices = self.index.search(_as_float32(self._prepare(qf)), k)
        scores = torch.from_numpy(np.asarray(scores, dtype=np.float32))
        indices = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        if self.metric == "cosine":
            distances = 1.0 - scores  # inner product of unit vectors -> 1 - cos
        else:
            distances = scores.clamp_min(0.0)  # faiss L2 is already squared
        distances[indices < 0] = float("inf")
        return indices, distances
