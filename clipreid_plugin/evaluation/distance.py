"""Feature checks, device choice, chunk sizing and query-gallery distances computed in chunks.

The reference computes the whole (Q, G) squared-Euclidean matrix at once
(``|q|^2 + |g|^2 - 2 q.g`` via ``addmm``). Here the same float32 expression is evaluated for a
block of queries at a time, so memory holds at most ``chunk x G`` distances; with a single
chunk the result is bitwise the reference's.
"""

from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from clipreid_plugin.utils.errors import ConfigError

__all__ = ["as_tensor", "check_features", "choose_device", "rows_per_chunk", "pairwise_distance_chunks",
           "squared_euclidean_block", "normalize_features", "METRICS"]

METRICS = ("euclidean", "cosine")

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


def as_tensor(x: ArrayLike, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Returns: ``x`` as a torch tensor (numpy arrays are shared, not copied) of ``dtype`` if given."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None and t.dtype != dtype else t


def check_features(feats: torch.Tensor, name: str) -> None:
    """Raise ValueError for an empty or non-2D feature matrix or one with NaN/inf values.

    Args:
        feats: (N, D) features.
        name: what the rows are ("query features"), used in the message.
    """
    if feats.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (num_images, dim) tensor, got shape {tuple(feats.shape)}.")
    if feats.shape[0] == 0:
        raise ValueError(f"{name} are empty (0 images): check the test split and TEST loader.")
    bad = ~torch.isfinite(feats).all(dim=1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
        raise ValueError(
            f"{name} contain NaN/inf values in {len(rows)} of {feats.shape[0]} rows (rows {shown}); "
            f"the model produced non-finite embeddings (diverged training or fp16 overflow?)."
        )


def choose_device(*tensors: torch.Tensor, device: Optional[Union[str, torch.device]] = None) -> torch.device:
    """Pick where to compute: ``device`` if given, CUDA if any input is on CUDA or CUDA is available, else CPU."""
    if device is not None:
        return torch.device(device)
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.is_cuda:
            return t.device
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def rows_per_chunk(num_cols: int, bytes_per_element: int, memory_budget_mb: float, minimum: int = 1) -> int:
    """Number of rows of a (rows, num_cols) working set that fit in the memory budget.

    Args:
        num_cols: width of one row (e.g. the gallery size).
        bytes_per_element: bytes the computation keeps per (row, col) element at its peak.
        memory_budget_mb: budget in MiB (TEST.MEMORY_BUDGET_MB).
        minimum: never return fewer rows than this.

    Returns:
        A positive row count.
    """
    budget = float(memory_budget_mb) * 2**20
    return max(minimum, int(budget // max(1, num_cols * bytes_per_element)))


def normalize_features(feats: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows as the reference does (``F.normalize(p=2, dim=1)``)."""
    return F.normalize(feats, p=2, dim=1)


def squared_euclidean_block(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """``|a_i|^2 + |b_j|^2 - 2 a_i.b_j`` in float32, the reference's exact expression.

    Args:
        a: (m, d), b: (n, d) features; a_sq: (m,), b_sq: (n,) squared norms
            (``torch.pow(x, 2).sum(dim=1)``, computed once for all rows).

    Returns:
        (m, n) distances (``addmm`` with beta=1, alpha=-2, as the reference).
    """
    dist = a_sq[:, None] + b_sq[None, :]
    return dist.addmm_(a, b.t(), beta=1, alpha=-2)


def pairwise_distance_chunks(
    qf: torch.Tensor, gf: torch.Tensor, metric: str = "euclidean", chunk_rows: Optional[int] = None,
    memory_budget_mb: float = 1024,
) -> Iterator[Tuple[int, torch.Tensor]]:
    """Yield query-gallery distances a block of queries at a time.

    Args:
        qf: (Q, D) and gf: (G, D) float features on the device to compute on.
        metric: "euclidean" (squared Euclidean, the reference) or "cosine" (1 - cosine similarity).
        chunk_rows: queries per block; default sized from ``memory_budget_mb`` assuming the ranking
            keeps about 32 bytes per distance.
        memory_budget_mb: see ``chunk_rows``.

    Yields:
        (start, dist) with ``dist`` the (rows, G) float32 distances of queries ``start:start+rows``.
    """
    if metric not in METRICS:
        raise ConfigError(f"Unknown TEST.METRIC {metric!r}; valid metrics: {', '.join(METRICS)}.")
    qf, gf = qf.float(), gf.float()
    if chunk_rows is None:
        chunk_rows = rows_per_chunk(gf.shape[0], 32, memory_budget_mb)
    if metric == "cosine":
        qn, gn = normalize_features(qf), normalize_features(gf)
        for s in range(0, qf.shape[0], chunk_rows):
            yield s, 1.0 - qn[s:s + chunk_rows] @ gn.t()
        return
    q_sq = torch.pow(qf, 2).sum(dim=1)
    g_sq = torch.pow(gf, 2).sum(dim=1)
    for s in range(0, qf.shape[0], chunk_rows):
        yield s, squared_euclidean_block(qf[s:s + chunk_rows], gf, q_sq[s:s + chunk_rows], g_sq)
