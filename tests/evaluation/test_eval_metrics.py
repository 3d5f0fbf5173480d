"""CMC / mAP / mINP against the reference tensors and hand-computed cases."""

import os

import numpy as np
import pytest
import torch

from clipreid_plugin.evaluation import evaluate_rank
from clipreid_plugin.evaluation.distance import normalize_features, pairwise_distance_chunks
from clipreid_plugin.evaluation.rank import distance_keys
from parity_harness.reference_eval import reference_eval_func

from eval_toy_data import normalised_squared_distances, toy_eval_set


@pytest.fixture(scope="module")
def refs(reference_dir):
    """../shared/reference/eval_refs.pt: the reference evaluator's inputs and outputs."""
    return torch.load(os.path.join(reference_dir, "eval_refs.pt"), weights_only=True)


def _split(refs):
    i, nq = refs["inputs"], refs["inputs"]["num_query"]
    return i["feats"], i["pids"], i["camids"], nq


@pytest.mark.parametrize("normalise,prefix", [(True, "r1map"), (False, "evalfunc_raw")])
@pytest.mark.parametrize("budget_mb", [1024, 0.002])  # one block / blocks of a few queries
def test_matches_reference_evaluator(refs, normalise, prefix, budget_mb):
    feats, pids, camids, nq = _split(refs)
    out = refs["outputs"]
    f = normalize_features(feats) if normalise else feats
    blocks = list(pairwise_distance_chunks(f[:nq], f[nq:], memory_budget_mb=budget_mb))
    assert (len(blocks) > 1) == (budget_mb < 1)
    dist = torch.cat([b for _, b in blocks])
    # float32 rounding may differ between block shapes (raw distances are ~500): relative 1e-6
    assert torch.allclose(dist, out[f"{prefix}_distmat"], rtol=1e-6, atol=1e-6)
    cmc, all_ap, all_inp = evaluate_rank(dist, pids[:nq], pids[nq:], camids[:nq], camids[nq:],
                                         memory_budget_mb=budget_mb)
    assert len(all_ap) == refs["meta"]["num_valid_queries"] == 48
    np.testing.assert_allclose(cmc, out[f"{prefix}_cmc"].numpy(), rtol=0, atol=1e-6)
    assert abs(float(np.mean(all_ap)) - out[f"{prefix}_mAP"]) <= 1e-6
    assert np.all((all_inp > 0) & (all_inp <= 1))


@pytest.mark.parametrize("normalise", [True, False])
def test_distance_blocks_equal_numpy(normalise):
    """Squared-Euclidean distances, in one block and in blocks of a few queries, equal numpy's
    float64 |q - g|^2 within float32 cancellation error (1e-6 x the largest |q|^2 + |g|^2)."""
    data = toy_eval_set()
    nq = data["num_query"]
    f = normalize_features(data["feats"]) if normalise else data["feats"]
    q, g = f[:nq].double().numpy(), f[nq:].double().numpy()
    expected = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    atol = 1e-6 * max(1.0, (q ** 2).sum(1).max() + (g ** 2).sum(1).max())
    for budget_mb in (1024, 0.002):
        blocks = list(pairwise_distance_chunks(f[:nq], f[nq:], memory_budget_mb=budget_mb))
        assert (len(blocks) > 1) == (budget_mb < 1)
        np.testing.assert_allclose(torch.cat([b for _, b in blocks]).numpy(), expected, rtol=0, atol=atol)


def test_cpu_ranking_subblocks_match_the_reference_protocol(monkeypatch):
    """One distance block ranked in sub-blocks of a single query row each (cache-sized on real
    data) gives the CMC and mAP of the reference's dense protocol (its transcription in
    tools/parity_harness/reference_eval.py) on the same distances."""
    from clipreid_plugin.evaluation.rank import RankAccumulator

    data = toy_eval_set()
    nq, pids, camids = data["num_query"], data["pids"].numpy(), data["camids"].numpy()
    monkeypatch.setattr(RankAccumulator, "CPU_SUBBLOCK_ELEMENTS", 1)
    dist = normalised_squared_distances(data["feats"], nq).astype(np.float32)
    cmc, all_ap, _ = evaluate_rank(torch.from_numpy(dist), pids[:nq], pids[nq:], camids[:nq], camids[nq:])
    ref_cmc, ref_map = reference_eval_func(dist, pids[:nq], pids[nq:], camids[:nq], camids[nq:])
    assert len(all_ap) == 48
    np.testing.assert_allclose(cmc, ref_cmc, rtol=0, atol=1e-6)
    assert abs(float(np.mean(all_ap)) - ref_map) <= 1e-6
    assert 0.5 < ref_map < 1.0  # neither trivial nor hopeless: the ranking matters


def test_hand_computed_protocol():
    # one query (pid 1, cam 0); gallery distances 0.1..0.6 in index order
    g_pids = np.array([1, 2, 1, 3, 1, 1])
    g_cams = np.array([0, 1, 1, 1, 1, 0])
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], dtype=np.float32)
    cmc, ap, inp = evaluate_rank(dist, np.array([1]), g_pids, np.array([0]), g_cams, max_rank=5)
    # items 0 and 5 (same pid, same cam) are removed: kept ranking = [2(neg), 1(pos), 3(neg), 1(pos)]
    np.testing.assert_allclose(cmc, [0, 1, 1, 1, 1])
    np.testing.assert_allclose(ap, [(1 / 2 + 2 / 4) / 2])
    np.testing.assert_allclose(inp, [2 / 4])
    # without camera filtering (VehicleID protocol) item 0 is the first hit
    cmc, ap, inp = evaluate_rank(dist, np.array([1]), g_pids, np.array([0]), g_cams, max_rank=5,
                                 remove_same_camera=False)
    np.testing.assert_allclose(cmc, [1, 1, 1, 1, 1])
    np.testing.assert_allclose(ap, [(1 + 2 / 3 + 3 / 5 + 4 / 6) / 4])
    np.testing.assert_allclose(inp, [4 / 6])


def test_skipped_queries_and_max_rank_clipped_to_gallery():
    dist = np.array([[0.2, 0.1], [0.3, 0.4]], dtype=np.float32)
    cmc, ap, _ = evaluate_rank(dist, np.array([7, 8]), np.array([7, 9]), np.array([0, 0]), np.array([1, 1]))
    assert cmc.shape == (2,)  # gallery has 2 images
    np.testing.assert_allclose(cmc, [0, 1])  # query 8 has no match and is skipped
    np.testing.assert_allclose(ap, [0.5])


def test_ties_broken_by_gallery_index():
    # all distances equal: the ranking is the gallery order
    dist = np.zeros((1, 4), dtype=np.float32)
    cmc, ap, inp = evaluate_rank(dist, np.array([1]), np.array([2, 1, 2, 1]), np.array([0]), np.array([1, 1, 1, 1]),
                                 max_rank=4)
    np.testing.assert_allclose(cmc, [0, 1, 1, 1])
    np.testing.assert_allclose(ap, [(1 / 2 + 2 / 4) / 2])
    np.testing.assert_allclose(inp, [2 / 4])
    # -0.0 and +0.0 are the same distance; negatives sort before positives
    d = torch.tensor([[0.0, -0.0, -1.0, 2.0, float("1e-30")]])
    order = torch.argsort(distance_keys(d), dim=1).tolist()
    assert order == [[2, 0, 1, 4, 3]]


def _naive_protocol(dist, q_pids, g_pids, q_cams, g_cams, max_rank):
    """Reference eval_func (full stable argsort, per-query loop) plus fast-reid's INP."""
    order = np.argsort(dist, axis=1, kind="stable")
    cmcs, aps, inps = [], [], []
    for i in range(dist.shape[0]):
        o = order[i]
        keep = ~((g_pids[o] == q_pids[i]) & (g_cams[o] == q_cams[i]))
        m = (g_pids[o] == q_pids[i])[keep].astype(np.int64)
        if not m.any():
            continue
        c = m.cumsum()
        cmcs.append(np.minimum(c, 1)[:max_rank])
        aps.append(((c / np.arange(1, len(m) + 1)) * m).sum() / m.sum())
        inps.append(m.sum() / (np.flatnonzero(m).max() + 1))
    return np.mean(cmcs, 0), np.array(aps), np.array(inps)


def test_blocked_equals_naive_with_many_ties():
    rng = np.random.RandomState(0)
    q, g = 37, 120
    dist = rng.randint(0, 6, size=(q, g)).astype(np.float32)  # heavy ties
    q_pids, g_pids = rng.randint(0, 8, q), rng.randint(0, 8, g)
    q_cams, g_cams = rng.randint(0, 3, q), rng.randint(0, 3, g)
    expect = _naive_protocol(dist, q_pids, g_pids, q_cams, g_cams, 50)
    for budget in (1024, 0.001):
        got = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, memory_budget_mb=budget)
        np.testing.assert_allclose(got[0], expect[0], rtol=0, atol=1e-7)  # cmc is float32
        np.testing.assert_allclose(got[1], expect[1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got[2], expect[2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("bad,msg", [
    ("nan", "NaN/inf in 1 query rows"),
    ("shape", "does not match"),
    ("novalid", "None of the 2 queries"),
    ("empty", "Empty evaluation set"),
])
def test_clear_errors(bad, msg):
    dist = np.ones((2, 3), dtype=np.float32)
    q_pids, g_pids = np.array([1, 2]), np.array([1, 2, 3])
    q_cams, g_cams = np.array([0, 0]), np.array([1, 1, 1])
    if bad == "nan":
        dist[1, 2] = np.nan
    elif bad == "shape":
        g_pids = np.array([1, 2])
    elif bad == "novalid":
        g_pids = np.array([5, 6, 7])
    elif bad == "empty":
        dist, q_pids, q_cams = np.ones((0, 3), np.float32), np.array([], int), np.array([], int)
    with pytest.raises(ValueError, match=msg):
        evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams)


def test_feature_errors_name_rows():
    from clipreid_plugin.evaluation.distance import check_features

    f = torch.zeros(5, 4)
    f[1, 0], f[3, 2] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"2 of 5 rows \(rows 1, 3\)"):
        check_features(f, "query features")
    with pytest.raises(ValueError, match="empty"):
        check_features(torch.zeros(0, 4), "gallery features")
    with pytest.raises(ValueError, match="Unknown TEST.METRIC 'l1'"):
        next(pairwise_distance_chunks(f, f, metric="l1"))


def test_cosine_metric_is_one_minus_cosine():
    rng = torch.Generator().manual_seed(1)
    q, g = torch.randn(3, 5, generator=rng), torch.randn(4, 5, generator=rng)
    d = torch.cat([b for _, b in pairwise_distance_chunks(q, g, metric="cosine")])
    expect = 1 - torch.tensor([[float(torch.dot(a, b) / a.norm() / b.norm()) for b in g] for a in q])
    assert torch.allclose(d, expect, atol=1e-6)


def test_degenerate_equal_distances():
    # a collapsed model: every distance identical -> the ranking is the gallery order
    q_pids, g_pids = np.array([0, 1, 2]), np.tile(np.arange(3), 40)
    dist = np.full((3, 120), 0.5, dtype=np.float32)
    expect = _naive_protocol(dist, q_pids, g_pids, np.zeros(3, int), np.ones(120, int), 50)
    got = evaluate_rank(dist, q_pids, g_pids, np.zeros(3, int), np.ones(120, int), memory_budget_mb=0.001)
    np.testing.assert_allclose(got[0], expect[0], atol=1e-7)
    np.testing.assert_allclose(got[1], expect[1], atol=1e-12)
