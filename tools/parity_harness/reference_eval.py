"""The reference implementation's dense evaluation algorithms, transcribed (TransReID /
CLIP-ReID ``utils/metrics.py`` and ``utils/reranking.py``).

They build full (Q, G) / (N, N) matrices and loop in numpy, which is what makes them slow and
memory-hungry at MSMT17 scale. They are kept as an executable statement of the protocol: the
baseline of ``benchmarks/eval_scale.py`` and an oracle in the tests. Use
:func:`~clipreid_plugin.evaluation.evaluate_rank` and :func:`~clipreid_plugin.evaluation.re_ranking`
for real work.
"""

import numpy as np
import torch

__all__ = ["reference_euclidean_distance", "reference_eval_func", "reference_re_ranking"]


def reference_euclidean_distance(qf, gf):
    m, n = qf.shape[0], gf.shape[0]
    dist_mat = torch.pow(qf, 2).sum(dim=1, keepdim=True).expand(m, n) + \
        torch.pow(gf, 2).sum(dim=1, keepdim=True).expand(n, m).t()
    dist_mat.addmm_(qf, gf.t(), beta=1, alpha=-2)
    return dist_mat.cpu().numpy()


def reference_eval_func(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_AP, num_valid_q = [], [], 0.0
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        orig_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(orig_cmc):
            continue
        cmc = orig_cmc.cumsum()
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.0
        tmp_cmc = orig_cmc.cumsum() / (np.arange(1, orig_cmc.shape[0] + 1) * 1.0)
        all_AP.append((tmp_cmc * orig_cmc).sum() / orig_cmc.sum())
    return np.asarray(all_cmc).astype(np.float32).sum(0) / num_valid_q, np.mean(all_AP)


def reference_re_ranking(probFea, galFea, k1, k2, lambda_value, argsort_kind="quicksort"):
    """k-reciprocal re-ranking as the reference computes it; returns the (Q, G) distances.

    Args:
        probFea, galFea: query / gallery feature tensors.
        k1, k2, lambda_value: re-ranking parameters.
        argsort_kind: numpy sort kind of the neighbour ranking; the reference uses numpy's default
            (quicksort, arbitrary order among equal distances), "stable" makes ties deterministic.
    """
    query_num = probFea.size(0)
    all_num = query_num + galFea.size(0)
    feat = torch.cat([probFea, galFea])
    distmat = torch.pow(feat, 2).sum(dim=1, keepdim=True).expand(all_num, all_num) + \
        torch.pow(feat, 2).sum(dim=1, keepdim=True).expand(all_num, all_num).t()
    distmat.addmm_(feat, feat.t(), beta=1, alpha=-2)
    original_dist = distmat.cpu().numpy()
    del feat, distmat
    gallery_num = original_dist.shape[0]
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float16)
    initial_rank = np.argsort(original_dist, kind=argsort_kind).astype(np.int32)
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, :k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            cf = initial_rank[candidate, :int(np.around(k1 / 2)) + 1]
            cb = initial_rank[cf, :int(np.around(k1 / 2)) + 1]
            cand_k = cf[np.where(cb == candidate)[0]]
            if len(np.intersect1d(cand_k, k_reciprocal_index)) > 2 / 3 * len(cand_k):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index, cand_k)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float16)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank
    invIndex = [np.where(V[:, i] != 0)[0] for i in range(gallery_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float16)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float16)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]])
        jaccard_dist[i] = 1 - temp_min / (2 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]
