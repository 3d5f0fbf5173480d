"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) on neighbour lists and sparse matrices.

Numerically this is the reference's ``re_ranking`` (TransReID / CLIP-ReID ``utils/reranking.py``):

* ``original_dist`` = squared Euclidean over all Q+G images, divided by each column's max and
  transposed (so row ``i`` is column ``i`` of the distance matrix over its max), float32;
* k-reciprocal sets R(i) from the top k1+1 neighbours, expanded by the R'(c) (top
  round(k1/2)+1) of each candidate that shares more than 2/3 of R'(c) with R(i);
* ``V[i, E(i)] = exp(-d) / sum(exp(-d))`` in float32, stored as **float16**;
* local query expansion ``V_qe[i] = mean(V[top-k2 of i])`` (float32 sum, stored float16);
* ``temp_min[i, j] += min(V_qe[i, k], V_qe[j, k])`` accumulated **in float16, in ascending k**;
  Jaccard = ``1 - t / (2 - t)`` in float16;
* final = ``float16(J * float16(1 - lambda)) + float32(d * lambda)``, query x gallery block.

The float16 steps are reproduced operation by operation (float16 rounding is what makes the
reference's numbers), while memory stays bounded: the reference holds four dense (N, N)
matrices (N = Q+G; 35 GB each at MSMT17 scale). Here only the 3(k1+1) nearest neighbours of
every image (indices and distances), the sparse V (a few dozen non-zeros per row, a few
hundred after query expansion) and one block of ``chunk x N`` distances exist at a time. The
(N, N) distance matrix is computed once in row blocks (neighbour lists), again only for the
rare rows whose expansion set reaches beyond the stored neighbours, and once more for the
query rows (the final lambda term).

Ties in distance are broken by index (stable sort), as everywhere in this package.
"""

from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch

from clipreid_plugin.utils.errors import ConfigError
from .distance import ArrayLike, as_tensor, check_features, choose_device, rows_per_chunk, squared_euclidean_block
from .rank import distance_keys

__all__ = ["re_ranking", "re_ranking_chunks"]


class _Problem:
    """All Q+G features and the reference's original distance, computed a block of rows at a time."""

    def __init__(self, q_feat: torch.Tensor, g_feat: torch.Tensor, memory_budget_mb: float):
        self.feat = torch.cat([q_feat, g_feat]).float()
        self.num_q, self.n = q_feat.shape[0], self.feat.shape[0]
        self.sq = torch.pow(self.feat, 2).sum(dim=1)
        self.budget = memory_budget_mb
        # block (N, c) fp32 + its normalised transpose + int64 keys and their temporaries
        self.rows = rows_per_chunk(self.n, 32, memory_budget_mb)

    def od_rows(self, rows) -> torch.Tensor:
        """Rows ``rows`` (a slice or index tensor) of ``original_dist`` = (D / D.max(axis=0)).T.

        D is symmetric (``|a|^2+|b|^2-2a.b`` evaluates the same both ways; bitwise with MKL), so
        row i of the transposed, column-normalised matrix is row i of D over its own max; rows
        are contiguous, which keeps the reductions fast.
        """
        block = squared_euclidean_block(self.feat[rows], self.feat, self.sq[rows], self.sq)
        return block.div_(block.amax(dim=1, keepdim=True))

    def blocks(self, end: Optional[int] = None):
        end = self.n if end is None else end
        for s in range(0, end, self.rows):
            yield s, min(s + self.rows, end)


def _neighbours(p: _Problem, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each row's k nearest images in original_dist (itself included), in (distance, index) order.

    Returns:
        (N, k) int64 indices and (N, k) float32 original_dist values.
    """
    out = torch.empty((p.n, k), dtype=torch.int64, device=p.feat.device)
    out_val = torch.empty((p.n, k), dtype=torch.float32, device=p.feat.device)
    for s, e in p.blocks():
        od = p.od_rows(slice(s, e))
        vals, idx = torch.topk(od, k, dim=1, largest=False, sorted=True)
        # ties decide by index (stable sort): reorder within the selection by (value, index) and
        # redo with exact keys the rare rows where the k-th value also occurs outside it
        order = torch.sort(distance_keys(vals, idx), dim=1).indices
        idx = torch.gather(idx, 1, order)
        straddle = torch.nonzero((od <= vals[:, -1:]).sum(dim=1) > k).flatten()
        if straddle.numel():
            idx[straddle] = torch.topk(distance_keys(od[straddle]), k, dim=1, largest=False, sorted=True).indices
        out[s:e] = idx
        out_val[s:e] = torch.gather(od, 1, idx)
    return out, out_val


def _reciprocal(nb: torch.Tensor, budget_mb: float) -> torch.Tensor:
    """mask[i, m]: i is among the neighbours of its m-th neighbour (the k-reciprocal test)."""
    n, k = nb.shape
    mask = torch.empty((n, k), dtype=torch.bool, device=nb.device)
    step = rows_per_chunk(k * k, 16, budget_mb)
    for s in range(0, n, step):
        rows = torch.arange(s, min(s + step, n), device=nb.device)
        mask[s:s + step] = (nb[nb[rows]] == rows[:, None, None]).any(dim=-1)
    return mask


def _expansion_sets(nb1: torch.Tensor, rec1: torch.Tensor, nbh: torch.Tensor, rech: torch.Tensor,
                    s: int, e: int) -> torch.Tensor:
    """Sorted expansion sets E(i) for rows s:e, padded with N (the reference's np.unique output)."""
    n = nb1.shape[0]
    r_idx, r_mask = nb1[s:e], rec1[s:e]                      # R(i): candidates + reciprocity
    h_idx, h_mask = nbh[r_idx], rech[r_idx]                  # R'(c) of every candidate c
    in_r = ((h_idx[..., None] == r_idx[:, None, None, :]) & r_mask[:, None, None, :]).any(-1) & h_mask
    cnt, size = in_r.sum(-1).double(), h_mask.sum(-1).double()
    accept = r_mask & (cnt > (2.0 / 3.0) * size)             # same float64 test as the reference
    pad = torch.full_like(r_idx, n)
    parts = [torch.where(r_mask, r_idx, pad),
             torch.where(accept[..., None] & h_mask, h_idx, torch.full_like(h_idx, n)).flatten(1)]
    allv = torch.sort(torch.cat(parts, dim=1), dim=1).values
    dup = torch.zeros_like(allv, dtype=torch.bool)
    dup[:, 1:] = allv[:, 1:] == allv[:, :-1]
    allv = torch.sort(allv.masked_fill(dup, n), dim=1).values
    width = max(1, int((allv < n).sum(1).max()))
    return allv[:, :width]


def _weights(vals: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Row-wise exp(-d)/sum(exp(-d)) with numpy float32, as the reference, then float16."""
    out = np.empty(int(lengths.sum()), dtype=np.float16)
    o = 0
    for r, ln in enumerate(lengths.tolist()):
        w = np.exp(-vals[r, :ln])          # np.sum's pairwise order needs the exact 1-D row
        out[o:o + ln] = w / np.sum(w)
        o += ln
    return out


def _csr_rows_gather(ptr: torch.Tensor, rows: torch.Tensor):
    """Positions in a CSR value array of the entries of ``rows`` (flattened, in order), and owners."""
    lens = ptr[rows + 1] - ptr[rows]
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=ptr.device), lens)
    offs = torch.cumsum(lens, 0) - lens
    pos = ptr[rows][owner] + torch.arange(owner.numel(), device=ptr.device) - offs[owner]
    return pos, owner


def _build_v(p: _Problem, near: Tuple[torch.Tensor, torch.Tensor], k1: int) -> Tuple[torch.Tensor, ...]:
    """Sparse V as CSR (ptr (N+1,), col (nnz,), val float16 (nnz,)).

    The distances of E(i) are looked up in the stored nearest list of row i; rows whose set
    reaches beyond it get their original_dist row recomputed (the same float32 expression, so
    the same values).
    """
    nb, near_val = near
    kh = int(np.around(k1 / 2.0)) + 1
    nb1, nbh = nb[:, :k1 + 1].contiguous(), nb[:, :kh].contiguous()
    rec1, rech = _reciprocal(nb1, p.budget), _reciprocal(nbh, p.budget)
    per_row = (k1 + 1) * (kh + 1) * max(k1 + 1, nb.shape[1]) * 4
    step = rows_per_chunk(per_row, 1, p.budget)
    cols, vals, lens = [], [], []
    for a in range(0, p.n, step):
        b = min(a + step, p.n)
        E = _expansion_sets(nb1, rec1, nbh, rech, a, b)
        inside = E < p.n
        ln = inside.sum(1)
        eq = E[:, :, None] == nb[a:b, None, :]
        d = torch.where(eq, near_val[a:b, None, :], torch.zeros((), device=E.device)).sum(-1)  # one hit at most
        miss = torch.nonzero((inside & ~eq.any(-1)).any(1)).flatten()
        del eq
        for m in range(0, miss.numel(), p.rows):
            r = miss[m:m + p.rows] + a
            d[r - a] = torch.gather(p.od_rows(r), 1, E[r - a].clamp(max=p.n - 1))
        w = torch.from_numpy(_weights(d.cpu().numpy(), ln.cpu().numpy())).to(E.device)
        c = E[inside]                                          # row-major, ascending per row
        keep = w != 0                                          # float16 underflow: not a non-zero
        cols.append(c[keep])
        vals.append(w[keep])
        owner = torch.repeat_interleave(torch.arange(b - a, device=E.device), ln)
        lens.append(torch.bincount(owner[keep], minlength=b - a))
    ptr = torch.zeros(p.n + 1, dtype=torch.int64, device=nb.device)
    ptr[1:] = torch.cumsum(torch.cat(lens), 0)
    return ptr, torch.cat(cols), torch.cat(vals)


def _query_expansion(v, nb: torch.Tensor, k2: int, budget_mb: float):
    """V_qe[i] = float16(float32(sum of V rows of i's top-k2) / k2), sparse CSR."""
    ptr, col, val = v
    n = ptr.numel() - 1
    avg_nnz = max(1, col.numel() // max(1, n))
    step = rows_per_chunk(k2 * avg_nnz, 48, budget_mb)
    new_cols, new_vals, new_lens = [], [], []
    for s in range(0, n, step):
        e = min(s + step, n)
        rows = nb[s:e, :k2].reshape(-1)
        pos, owner = _csr_rows_gather(ptr, rows)
        key = (owner // k2) * n + col[pos]
        uniq, inv = torch.unique(key, sorted=True, return_inverse=True)
        # float16 values are multiples of 2^-24 below 1: their float64 sum is exact, so rounding
        # it to float32 equals numpy's float32 accumulation.
        sums = torch.zeros(uniq.numel(), dtype=torch.float64, device=ptr.device).index_add_(
            0, inv, val[pos].double())
        mean = (sums.float() / torch.tensor(float(k2), dtype=torch.float32)).half()
        keep = mean != 0
        uniq, mean = uniq[keep], mean[keep]
        new_cols.append(uniq % n)
        new_vals.append(mean)
        new_lens.append(torch.bincount(uniq // n, minlength=e - s))
    nptr = torch.zeros(n + 1, dtype=torch.int64, device=ptr.device)
    nptr[1:] = torch.cumsum(torch.cat(new_lens), 0)
    return nptr, torch.cat(new_cols), torch.cat(new_vals)


def _jaccard_rows(qv, gallery_csc, s: int, e: int, num_q: int, num_g: int) -> torch.Tensor:
    """float16 Jaccard distances of queries s:e to every gallery image (reference's loop order).

    The reference adds, for each query, the terms of its non-zero columns k in ascending k to a
    float16 row ``temp_min``. Round t here adds the t-th non-zero column of every query of the
    block at once; within a round every (query, gallery) cell is hit at most once, so a plain
    vectorised update reproduces the sequential float16 sums without sorting.
    """
    qptr, qcol, qval = qv
    cptr, crow, cval = gallery_csc
    dev = qptr.device
    acc = torch.zeros((e - s, num_g), dtype=torch.float16, device=dev)
    flat = acc.view(-1)
    row_start, row_len = qptr[s:e], qptr[s + 1:e + 1] - qptr[s:e]
    live = torch.argsort(row_len, descending=True, stable=True)
    live_len = row_len[live]
    for t in range(int(row_len.max()) if row_len.numel() else 0):
        rows = live[: int((live_len > t).sum())]               # queries with a t-th column
        ent = row_start[rows] + t
        pos, owner = _csr_rows_gather(cptr, qcol[ent])
        if pos.numel() == 0:
            continue
        cell = rows[owner] * num_g + crow[pos]
        term = torch.minimum(qval[ent][owner], cval[pos])
        flat[cell] = (flat[cell].float() + term.float()).half()
    t = acc.float()
    denom = (2.0 - t).half().float()
    return (1.0 - (t / denom).half().float()).half()


def re_ranking_chunks(q_feat: ArrayLike, g_feat: ArrayLike, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                      memory_budget_mb: float = 1024,
                      device: Optional[Union[str, torch.device]] = None) -> Iterator[Tuple[int, torch.Tensor]]:
    """Re-ranked query-gallery distances, a block of queries at a time.

    Args:
        q_feat: (Q, D) and g_feat: (G, D) features (used as given: normalise them first if the
            protocol does).
        k1, k2, lambda_value: re-ranking parameters (the reference's evaluator uses 50, 15, 0.3).
        memory_budget_mb: bounds every block (TEST.MEMORY_BUDGET_MB).
        device: where to compute; default CUDA when the features are there or CUDA is available.

    Yields:
        (start, dist) with ``dist`` the (rows, G) float32 re-ranked distances of queries start:start+rows.
    """
    qf, gf = as_tensor(q_feat, torch.float32), as_tensor(g_feat, torch.float32)
    check_features(qf, "query features")
    check_features(gf, "gallery features")
    if qf.shape[1] != gf.shape[1]:
        raise ValueError(f"Query features have dim {qf.shape[1]} but gallery features dim {gf.shape[1]}.")
    num_q, num_g = qf.shape[0], gf.shape[0]
    if not (isinstance(k1, (int, np.integer)) and isinstance(k2, (int, np.integer)) and k1 >= 1 and k2 >= 1):
        raise ConfigError(f"Re-ranking needs integers k1 >= 1 and k2 >= 1, got k1={k1!r}, k2={k2!r}.")
    if k1 >= num_g:
        raise ConfigError(f"TEST.RERANK.K1={k1} must be smaller than the gallery size ({num_g} images).")
    if k2 > num_q + num_g:
        raise ConfigError(f"TEST.RERANK.K2={k2} exceeds the number of images ({num_q + num_g}).")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ConfigError(f"TEST.RERANK.LAMBDA must be in [0, 1], got {lambda_value}.")
    dev = choose_device(qf, gf, device=device)
    p = _Problem(qf.to(dev), gf.to(dev), memory_budget_mb)
    # 3 (k1+1) stored neighbours cover the expansion sets of almost every row
    near = _neighbours(p, min(p.n, max(3 * (k1 + 1), k2)))
    v = _build_v(p, near, k1)
    if k2 != 1:
        v = _query_expansion(v, near[0], k2, memory_budget_mb)
    del near
    ptr, col, val = v
    # gallery rows of V_qe by column (CSC), rows ascending within a column
    row_of = torch.repeat_interleave(torch.arange(p.n, device=dev), ptr[1:] - ptr[:-1])
    g_sel = row_of >= num_q
    g_col, g_row, g_val = col[g_sel], row_of[g_sel] - num_q, val[g_sel]
    order = torch.sort(g_col, stable=True).indices
    cptr = torch.zeros(p.n + 1, dtype=torch.int64, device=dev)
    cptr[1:] = torch.cumsum(torch.bincount(g_col, minlength=p.n), 0)
    csc = (cptr, g_row[order], g_val[order])
    qv = (ptr[:num_q + 1], col[: int(ptr[num_q])], val[: int(ptr[num_q])])
    # queries per block: bounded by the distance block and by the number of (i, j, k) triples
    per_entry = (cptr[1:] - cptr[:-1])[qv[1]]
    per_query = torch.zeros(num_q, dtype=torch.int64, device=dev).index_add_(
        0, torch.repeat_interleave(torch.arange(num_q, device=dev), ptr[1:num_q + 1] - ptr[:num_q]), per_entry)
    cum = torch.cumsum(per_query, 0).cpu()
    max_triples = max(1, int(memory_budget_mb * 2**20 // 64))
    lam16 = torch.tensor(1.0 - lambda_value, dtype=torch.float16, device=dev)
    lam32 = torch.tensor(lambda_value, dtype=torch.float32, device=dev)
    s = 0
    while s < num_q:
        base = int(cum[s - 1]) if s else 0
        e = int(torch.searchsorted(cum, torch.tensor(base + max_triples), right=True))
        e = min(max(e, s + 1), s + p.rows, num_q)
        jac = _jaccard_rows(qv, csc, s, e, num_q, num_g)
        od = p.od_rows(slice(s, e))[:, num_q:]
        yield s, (jac * lam16).float() + od * lam32
        s = e


def re_ranking(q_feat: ArrayLike, g_feat: ArrayLike, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
               memory_budget_mb: float = 1024, device: Optional[Union[str, torch.device]] = None) -> np.ndarray:
    """k-reciprocal re-ranking (fast-reid's name and signature); see :func:`re_ranking_chunks`.

    Returns:
        (Q, G) float32 numpy re-ranked distances (this one array is the only (Q, G) object built).
    """
    qf = as_tensor(q_feat)
    out = np.empty((qf.shape[0], as_tensor(g_feat).shape[0]), dtype=np.float32)
    for s, block in re_ranking_chunks(q_feat, g_feat, k1, k2, lambda_value, memory_budget_mb, device):
        out[s:s + block.shape[0]] = block.cpu().numpy()
    return out
