"""Alpha query expansion (alpha-QE, Radenovic et al.), computed a block of rows at a time."""

import torch

from clipreid_plugin.utils.errors import ConfigError

from .distance import ArrayLike, as_tensor, check_features, normalize_features, rows_per_chunk
from .rank import distance_keys

__all__ = ["aqe"]


def aqe(query_feat: ArrayLike, gallery_feat: ArrayLike, qe_times: int = 1, qe_k: int = 10, alpha: float = 3.0,
        memory_budget_mb: float = 1024):
    """Replace every feature by the similarity-weighted mean of its qe_k nearest features.

    fast-reid's ``aqe``: over the union of query and gallery features, cosine similarities
    ``s`` to the qe_k most similar rows (the row itself included) weight those rows by ``s**alpha``
    and their mean becomes the new feature; repeated ``qe_times`` times. Ties in similarity go
    to the lower index.

    Args:
        query_feat: (Q, D); gallery_feat: (G, D) features.
        qe_times: number of expansion rounds.
        qe_k: neighbours averaged per row (TEST.AQE.QE_K).
        alpha: similarity exponent (TEST.AQE.ALPHA).
        memory_budget_mb: bounds the (rows, Q+G) similarity block.

    Returns:
        (query_feat, gallery_feat) expanded, un-normalised, same device and dtype float32.
    """
    qf, gf = as_tensor(query_feat, torch.float32), as_tensor(gallery_feat, torch.float32)
    check_features(qf, "query features")
    check_features(gf, "gallery features")
    feats = torch.cat([qf, gf.to(qf.device)])
    n = feats.shape[0]
    if not 1 <= qe_k <= n:
        raise ConfigError(f"TEST.AQE.QE_K={qe_k} must be between 1 and the number of images ({n}).")
    step = rows_per_chunk(n, 24, memory_budget_mb)
    for _ in range(int(qe_times)):
        normed = normalize_features(feats)
        new = torch.empty_like(feats)
        for s in range(0, n, step):
            sims = normed[s:s + step] @ normed.t()
            idx = torch.topk(distance_keys(-sims), qe_k, dim=1, largest=False).indices
            w = torch.pow(torch.gather(sims, 1, idx), alpha)
            new[s:s + step] = (feats[idx] * w[..., None]).mean(dim=1)
        feats = new
    return feats[: qf.shape[0]], feats[qf.shape[0]:]
