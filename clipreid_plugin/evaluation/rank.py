"""CMC / mAP / mINP of the Market-1501 protocol, computed one block of queries at a time.

Protocol (the reference ``eval_func``, plus mINP as fast-reid defines it):

* For each query, gallery items with the same identity *and* the same camera are removed
  (``remove_same_camera``; off for VehicleID's random-gallery protocol).
* The remaining ("kept") gallery items are ranked by ascending distance. **Ties are broken by
  gallery index**, i.e. the ranking is a stable sort on (distance, gallery index); -0.0 == +0.0.
* Queries without any kept match are skipped and counted (``num_skipped_query``).
* CMC@r = fraction of valid queries whose first match is at rank <= r (ranks beyond the kept
  list count as matched, as the reference's clipped cumsum does).
* AP = mean over *all* matches m (no cut-off) of (m / rank of the m-th match); mAP = mean AP.
* INP = (number of matches) / (rank of the last match); mINP = mean INP.

No (Q, G) argsort is ever built. The rank of a match is 1 + the number of kept gallery items
that sort before it; the comparison uses int64 keys ``(monotone bits of the float32 distance)
<< 32 | gallery index`` which order exactly like the stable sort. Counting is done per query
block with a histogram over equal-width distance bins (a monotone map of the distance): items
in lower bins than a match are counted from the cumulative histogram, and only the few items
that share a bin with a match are compared key by key. Cost: a handful of elementwise passes
and one bincount over the block, no sort and no binary search per gallery item.
"""

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from clipreid_plugin.utils.errors import ConfigError
from .distance import ArrayLike, as_tensor, rows_per_chunk

__all__ = ["evaluate_rank", "rank_distance_chunks", "RankAccumulator", "RankResult", "distance_keys"]

_INT64_MAX = torch.iinfo(torch.int64).max


def distance_keys(dist: torch.Tensor, cols: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Map float distances to int64 keys ordered as the stable sort by (distance, column index).

    Args:
        dist: (..., G) float distances (cast to float32; must be finite).
        cols: gallery index of every entry (same shape as ``dist``); default ``arange(G)``.

    Returns:
        int64 keys; ``key[i, j] < key[i, k]`` iff ``(d_ij, col_ij) < (d_ik, col_ik)``.
    """
    d = dist.float() + 0.0  # -0.0 -> +0.0 so that both zeros compare equal, as floats do
    bits = d.view(torch.int32)
    # For negative floats, larger magnitude = larger unsigned bits; flipping the 31 low bits
    # makes the signed int32 order equal the float order.
    mono = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    if cols is None:
        cols = torch.arange(dist.shape[-1], device=dist.device, dtype=torch.int64)
    return (mono << 32) | cols


@dataclass
class RankResult:
    """Per-protocol results (fractions in [0, 1], not percent).

    Attributes:
        cmc: (max_rank,) float64 CMC curve over valid queries.
        all_AP: (num_valid,) float64 AP per valid query, in query order.
        all_INP: (num_valid,) float64 INP per valid query.
        valid: (Q,) bool, which queries had at least one kept match.
        topk_indices / topk_distances: (Q, k) best kept gallery items per query, or None.
        roc: {fpr: tpr} when FPRs were requested.
    """

    cmc: np.ndarray
    all_AP: np.ndarray
    all_INP: np.ndarray
    valid: np.ndarray
    topk_indices: Optional[np.ndarray] = None
    topk_distances: Optional[np.ndarray] = None
    roc: Dict[float, float] = field(default_factory=dict)
    first_rank: Optional[np.ndarray] = None  # (Q,) int64 rank of the first kept match, 0 = no match

    @property
    def num_valid(self) -> int:
        return int(self.valid.sum())


class RankAccumulator:
    """Accumulates the protocol over query blocks of a distance matrix.

    Args:
        q_pids, q_camids: (Q,) query identities and cameras.
        g_pids, g_camids: (G,) gallery identities and cameras.
        max_rank: length of the CMC curve (clipped to the gallery size, as the reference).
        remove_same_camera: drop gallery items with the query's identity and camera.
        topk: also keep the ``topk`` best kept gallery items per query (0 = off).
        roc_fprs: false-positive rates at which to report the true-positive rate (pairs of
            query and kept gallery item; match = same identity; accepted = distance < threshold).
        device: where the per-block work runs (the blocks are moved there).
    """

    def __init__(self, q_pids: ArrayLike, q_camids: ArrayLike, g_pids: ArrayLike, g_camids: ArrayLike,
                 max_rank: int = 50, remove_same_camera: bool = True, topk: int = 0,
                 roc_fprs: Sequence[float] = (), device: Optional[torch.device] = None):
        q_pids, q_camids = as_tensor(q_pids, torch.int64).flatten(), as_tensor(q_camids, torch.int64).flatten()
        g_pids, g_camids = as_tensor(g_pids, torch.int64).flatten(), as_tensor(g_camids, torch.int64).flatten()
        if q_pids.numel() != q_camids.numel() or g_pids.numel() != g_camids.numel():
            raise ValueError(
                f"Length mismatch: {q_pids.numel()} query pids vs {q_camids.numel()} query camids, "
                f"{g_pids.numel()} gallery pids vs {g_camids.numel()} gallery camids.")
        if q_pids.numel() == 0 or g_pids.numel() == 0:
            raise ValueError(f"Empty evaluation set: {q_pids.numel()} queries, {g_pids.numel()} gallery images.")
        self.device = device or torch.device("cpu")
        self.q_pids, self.q_camids = q_pids.to(self.device), q_camids.to(self.device)
        self.g_pids, self.g_camids = g_pids.to(self.device), g_camids.to(self.device)
        self.num_q, self.num_g = q_pids.numel(), g_pids.numel()
        self.max_rank = min(int(max_rank), self.num_g)
        self.remove_same_camera = remove_same_camera
        self.topk = min(int(topk), self.num_g)
        self.roc_fprs = tuple(sorted(float(f) for f in roc_fprs))
        self._bins = int(min(4096, max(16, self.num_g // 4)))  # distance bins per query (see add)
        # Gallery grouped by identity: the matches of a query are one contiguous slice.
        self._g_order = torch.sort(self.g_pids, stable=True).indices
        self._uniq, counts = torch.unique_consecutive(self.g_pids[self._g_order], return_counts=True)
        self._starts = torch.cumsum(counts, 0) - counts
        self._counts = counts
        # Per-query outputs.
        self._first_rank = torch.zeros(self.num_q, dtype=torch.int64)
        self._ap = torch.zeros(self.num_q, dtype=torch.float64)
        self._inp = torch.zeros(self.num_q, dtype=torch.float64)
        self._valid = torch.zeros(self.num_q, dtype=torch.bool)
        self._seen = torch.zeros(self.num_q, dtype=torch.bool)
        self._topk_idx = torch.zeros((self.num_q, self.topk), dtype=torch.int64) if self.topk else None
        self._topk_dist = torch.zeros((self.num_q, self.topk), dtype=torch.float32) if self.topk else None
        if self.roc_fprs:
            same = self._match_counts(self.q_pids)
            self._num_neg = int((self.num_g - same).sum())  # kept non-matches over all queries
            self._neg_keep = max(1, int(self.roc_fprs[-1] * self._num_neg) + 1)
            self._neg_best = torch.empty(0, dtype=torch.float32, device=self.device)
            self._pos_dists: List[torch.Tensor] = []

    def _match_counts(self, pids: torch.Tensor) -> torch.Tensor:
        pos = torch.searchsorted(self._uniq, pids).clamp(max=self._uniq.numel() - 1)
        return torch.where(self._uniq[pos] == pids, self._counts[pos], torch.zeros_like(pos))

    def _matches(self, s: int, e: int):
        """Padded gallery indices of each query's identity, with masks (kept, removed)."""
        pids, cams = self.q_pids[s:e], self.q_camids[s:e]
        pos = torch.searchsorted(self._uniq, pids).clamp(max=self._uniq.numel() - 1)
        found = self._uniq[pos] == pids
        n = torch.where(found, self._counts[pos], torch.zeros_like(pos))
        width = max(1, int(n.max()))
        ar = torch.arange(width, device=self.device)
        in_row = ar[None, :] < n[:, None]
        slot = (self._starts[pos][:, None] + ar[None, :]).clamp(max=self.num_g - 1)
        idx = self._g_order[slot]
        removed = in_row & (self.g_camids[idx] == cams[:, None]) if self.remove_same_camera \
            else torch.zeros_like(in_row)
        return idx, in_row & ~removed, removed

    def add(self, start: int, dist: torch.Tensor) -> None:
        """Account for the queries ``start:start+len(dist)``.

        Args:
            start: index of the block's first query.
            dist: (rows, G) distances of those queries to every gallery item.
        """
        dist = dist.to(self.device).float()
        if dist.shape[1] != self.num_g or start + dist.shape[0] > self.num_q:
            raise ValueError(f"Distance block of shape {tuple(dist.shape)} at query {start} does not fit "
                             f"{self.num_q} queries x {self.num_g} gallery items.")
        # The ranking makes several elementwise passes over its rows: on a CPU, sub-blocks that
        # stay in cache make them several times faster than streaming a large block from memory
        # (the distance GEMM, done by the caller, prefers large blocks). GPUs take the block whole.
        step = dist.shape[0] if dist.is_cuda else max(1, self.CPU_SUBBLOCK_ELEMENTS // self.num_g)
        for s in range(0, dist.shape[0], step):
            self._add_block(start + s, dist[s:s + step])

    # elements of one CPU ranking sub-block (4 MiB of float32 distances)
    CPU_SUBBLOCK_ELEMENTS = 1 << 20

    def _add_block(self, start: int, dist: torch.Tensor) -> None:
        rows, end = dist.shape[0], start + dist.shape[0]
        dev = self.device
        idx, kept, removed = self._matches(start, end)
        m_keys = distance_keys(torch.gather(dist, 1, idx), idx)
        # kept matches of each query in ranking order (padding sorts last)
        p_keys, perm = torch.sort(torch.where(kept, m_keys, torch.full_like(m_keys, _INT64_MAX)), dim=1)
        p_dist = torch.gather(torch.gather(dist, 1, idx), 1, perm)
        n_match = kept.sum(dim=1)
        width = idx.shape[1]
        is_match = torch.arange(width, device=dev)[None, :] < n_match[:, None]
        # less[i, m] = gallery items ranked before the m-th match. Exact, without sorting: a
        # per-row histogram over B equal-width distance bins (binning is monotone in the
        # distance) counts the items in lower bins; items sharing a bin with a match are few and
        # are compared key by key.
        nb = self._bins
        lo, hi = torch.aminmax(dist, dim=1, keepdim=True)
        span = hi - lo
        scale = torch.where(span > 0, nb / span.clamp(min=1e-30), torch.zeros_like(span))

        def to_bin(v, lo_=lo, scale_=scale):
            return ((v - lo_) * scale_).clamp_(0, nb - 1).to(torch.int32)  # int32: half the traffic

        if rows * nb >= 2**31:
            raise ConfigError(f"Query block of {rows} rows is too large; lower TEST.MEMORY_BUDGET_MB.")
        offs = (torch.arange(rows, device=dev, dtype=torch.int32) * nb)[:, None]
        flat = to_bin(dist).add_(offs)
        hist = torch.bincount(flat.view(-1), minlength=rows * nb).view(rows, nb)
        cum = torch.cumsum(hist, dim=1)
        p_bin = to_bin(p_dist)
        less = torch.where(p_bin > 0, torch.gather(cum, 1, (p_bin.long() - 1).clamp(min=0)), torch.zeros_like(cum[:, :1]))
        table = torch.zeros(rows * nb, dtype=torch.bool, device=dev)
        table[(p_bin + offs)[is_match].long()] = True
        f_row, f_col = torch.nonzero(table[flat], as_tuple=True)
        del flat
        # pieces keep the (items x matches) comparison within the block's own size even when
        # the distances collapse into one bin (e.g. a degenerate model)
        piece = max(1, dist.numel() // max(1, width))
        for a in range(0, f_row.numel(), piece):
            fr, fc = f_row[a:a + piece], f_col[a:a + piece]
            f_dist = dist[fr, fc]
            f_keys = distance_keys(f_dist, fc)
            f_bin = to_bin(f_dist, lo[fr, 0], scale[fr, 0])
            before = (f_bin[:, None] == p_bin[fr]) & (f_keys[:, None] < p_keys[fr]) & is_match[fr]
            less.index_add_(0, fr, before.long())
        # removed items (same identity and camera) are not ranked at all
        r_row, r_col = torch.nonzero(removed, as_tuple=True)
        if r_row.numel():
            r_before = (m_keys[r_row, r_col][:, None] < p_keys[r_row]) & is_match[r_row]
            less.index_add_(0, r_row, -r_before.long())
        ranks = less + 1  # 1-based rank among kept items of each kept match
        valid = n_match > 0
        m = torch.arange(1, width + 1, device=dev, dtype=torch.float64)
        prec = torch.where(is_match, m[None, :] / ranks.double(), torch.zeros((), dtype=torch.float64, device=dev))
        ap = prec.sum(1) / n_match.clamp(min=1)
        last = torch.gather(ranks, 1, (n_match - 1).clamp(min=0)[:, None])[:, 0]
        inp = n_match.double() / last.double()
        sl = slice(start, end)
        self._first_rank[sl] = ranks[:, 0].cpu()
        self._ap[sl], self._inp[sl], self._valid[sl] = ap.cpu(), inp.cpu(), valid.cpu()
        self._seen[sl] = True
        if self.topk:
            keys = distance_keys(dist)
            keys[r_row, idx[r_row, r_col]] = _INT64_MAX  # removed items never enter the saved top-k
            top = torch.topk(keys, self.topk, dim=1, largest=False, sorted=True).indices
            self._topk_idx[sl] = top.cpu()
            self._topk_dist[sl] = torch.gather(dist, 1, top).cpu()
        if self.roc_fprs:
            self._add_roc(dist, idx, kept, removed)

    def _add_roc(self, dist, idx, kept, removed):
        d = dist.float().clone()
        self._pos_dists.append(d.gather(1, idx)[kept].cpu())
        rr, rc = torch.nonzero(kept | removed, as_tuple=True)
        d[rr, idx[rr, rc]] = float("inf")  # matches and removed items are not negatives
        flat = d.flatten()
        k = min(self._neg_keep, flat.numel())
        best = torch.topk(flat, k, largest=False, sorted=False).values
        merged = torch.cat([self._neg_best, best])
        k = min(self._neg_keep, merged.numel())
        self._neg_best = torch.topk(merged, k, largest=False, sorted=False).values

    def per_query(self) -> Dict[str, np.ndarray]:
        """Per-query results of every query given so far, skipped ones included.

        Returns:
            ``{"first_rank": (Q,) int64 (0 = no kept match), "ap": (Q,) float64, "inp": (Q,) float64
            (NaN where there is no kept match), "valid": (Q,) bool}``; unlike :meth:`result`, a
            query set without any valid query is not an error (a gallery camera holding none of
            the queries' identities).
        """
        valid = self._valid.numpy()
        nan = np.full(self.num_q, np.nan)
        return {"first_rank": np.where(valid, self._first_rank.numpy(), 0), "valid": valid,
                "ap": np.where(valid, self._ap.numpy(), nan), "inp": np.where(valid, self._inp.numpy(), nan)}

    def result(self) -> RankResult:
        """Returns: the RankResult; raises ValueError if a query block is missing or no query is valid."""
        if not bool(self._seen.all()):
            raise ValueError(f"Only {int(self._seen.sum())} of {self.num_q} queries were given distances.")
        valid = self._valid
        num_valid = int(valid.sum())
        if num_valid == 0:
            raise ValueError(
                f"None of the {self.num_q} queries has a matching gallery image (same identity, "
                f"{'different camera' if self.remove_same_camera else 'any camera'}): wrong query/gallery "
                f"split or identity labels?")
        first = self._first_rank[valid]
        hits = torch.bincount(first.clamp(max=self.max_rank + 1), minlength=self.max_rank + 2)
        cmc = (torch.cumsum(hits, 0)[1:self.max_rank + 1].double() / num_valid).numpy()
        roc = {}
        if self.roc_fprs:
            pos = torch.cat(self._pos_dists) if self._pos_dists else torch.empty(0)
            neg = torch.sort(self._neg_best.cpu()).values
            for f in self.roc_fprs:
                k = int(f * self._num_neg)  # at most k negatives may be accepted
                thr = neg[k] if k < neg.numel() else torch.tensor(float("inf"))
                roc[f] = float((pos < thr).double().mean()) if pos.numel() else float("nan")
        return RankResult(
            cmc=cmc, all_AP=self._ap[valid].numpy(), all_INP=self._inp[valid].numpy(), valid=valid.numpy(),
            topk_indices=None if self._topk_idx is None else self._topk_idx.numpy(),
            topk_distances=None if self._topk_dist is None else self._topk_dist.numpy(), roc=roc,
            first_rank=torch.where(valid, self._first_rank, torch.zeros_like(self._first_rank)).numpy())


def rank_distance_chunks(chunks: Iterable[Tuple[int, torch.Tensor]], q_pids, q_camids, g_pids, g_camids,
                         **kwargs) -> RankResult:
    """Run :class:`RankAccumulator` over ``(start, dist_block)`` pairs; kwargs go to its constructor."""
    acc = RankAccumulator(q_pids, q_camids, g_pids, g_camids, **kwargs)
    for start, block in chunks:
        acc.add(start, block)
    return acc.result()


def evaluate_rank(distmat: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike,
                  g_camids: ArrayLike, max_rank: int = 50, remove_same_camera: bool = True,
                  memory_budget_mb: float = 1024) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CMC, AP and INP from a full distance matrix (fast-reid's name and signature).

    Args:
        distmat: (Q, G) distances (numpy or torch; NaN/inf not allowed).
        q_pids, g_pids, q_camids, g_camids: identities and cameras.
        max_rank: CMC length (clipped to G).
        remove_same_camera: apply same-identity-same-camera removal (Market protocol).
        memory_budget_mb: bounds the per-block working memory.

    Returns:
        (cmc (max_rank,) float32 averaged over valid queries, all_AP (num_valid,), all_INP (num_valid,)).
    """
    d = as_tensor(distmat)
    if d.dim() != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {tuple(d.shape)}.")
    if d.shape[0] != len(q_pids) or d.shape[1] != len(g_pids):
        raise ValueError(f"distmat shape {tuple(d.shape)} does not match {len(q_pids)} query and "
                         f"{len(g_pids)} gallery ids.")
    bad = ~torch.isfinite(d).all(dim=1)
    if bool(bad.any()):
        raise ValueError(f"distmat has NaN/inf in {int(bad.sum())} query rows "
                         f"(first: {torch.nonzero(bad).flatten()[:10].tolist()}).")
    step = rows_per_chunk(d.shape[1], 40, memory_budget_mb)
    chunks = ((s, d[s:s + step]) for s in range(0, d.shape[0], step))
    res = rank_distance_chunks(chunks, q_pids, q_camids, g_pids, g_camids, max_rank=max_rank,
                               remove_same_camera=remove_same_camera, device=d.device)
    return res.cmc.astype(np.float32), res.all_AP, res.all_INP
