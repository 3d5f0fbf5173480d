"""k-reciprocal re-ranking against the reference tensors and the reference algorithm."""

import os

import numpy as np
import pytest
import torch

from clipreid_plugin.evaluation import evaluate_rank, re_ranking, re_ranking_chunks
from clipreid_plugin.evaluation.distance import normalize_features
from parity_harness.reference_eval import reference_re_ranking

from eval_toy_data import toy_eval_set


@pytest.fixture(scope="module")
def refs(reference_dir):
    """../shared/reference/eval_refs.pt: the reference evaluator's inputs and outputs."""
    return torch.load(os.path.join(reference_dir, "eval_refs.pt"), weights_only=True)


CASES = [(20, 6, "rerank_k20_6"), (50, 15, "r1map_rerank_k50_15")]


@pytest.mark.parametrize("k1,k2,prefix", CASES)
def test_matches_reference_tensors(refs, k1, k2, prefix):
    i, out = refs["inputs"], refs["outputs"]
    nq = i["num_query"]
    f = normalize_features(i["feats"])
    dist = re_ranking(f[:nq], f[nq:], k1=k1, k2=k2, lambda_value=0.3)
    np.testing.assert_allclose(dist, out[f"{prefix}_distmat"].numpy(), rtol=0, atol=1e-5)
    cmc, ap, _ = evaluate_rank(dist, i["pids"][:nq], i["pids"][nq:], i["camids"][:nq], i["camids"][nq:])
    np.testing.assert_allclose(cmc, out[f"{prefix}_cmc"].numpy(), rtol=0, atol=1e-6)
    assert abs(float(np.mean(ap)) - out[f"{prefix}_mAP"]) <= 1e-6


def test_blocked_equals_one_block():
    """Re-ranking in query blocks (0.5 MB budget) equals the one-block result."""
    i = toy_eval_set()
    nq = i["num_query"]
    f = normalize_features(i["feats"])
    whole = re_ranking(f[:nq], f[nq:], 20, 6, 0.3)
    blocks = list(re_ranking_chunks(f[:nq], f[nq:], 20, 6, 0.3, memory_budget_mb=0.5))
    assert len(blocks) > 1
    got = torch.cat([b for _, b in blocks]).numpy()
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-5)


def test_transcription_reproduces_reference_tensors(refs):
    # validates the dense transcription used below as the expectation on other problems
    i = refs["inputs"]
    nq = i["num_query"]
    f = normalize_features(i["feats"])
    np.testing.assert_allclose(reference_re_ranking(f[:nq], f[nq:], 20, 6, 0.3, argsort_kind="stable"),
                               refs["outputs"]["rerank_k20_6_distmat"].numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("k1,k2,lam", [(7, 1, 0.5), (9, 4, 0.0)])
def test_matches_dense_algorithm_on_other_settings(k1, k2, lam):
    # odd k1 (round-half-even of k1/2), no query expansion (k2=1), raw (un-normalised) features
    g = torch.Generator().manual_seed(3)
    centers = torch.randn(12, 16, generator=g) * 2
    ids = torch.randint(0, 12, (150,), generator=g)
    feats = centers[ids] + torch.randn(150, 16, generator=g)
    expect = reference_re_ranking(feats[:30], feats[30:], k1, k2, lam, argsort_kind="stable")
    np.testing.assert_allclose(re_ranking(feats[:30], feats[30:], k1, k2, lam), expect, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(k1=300), "K1=300 must be smaller than the gallery size"),
    (dict(k1=0), "integers k1 >= 1"),
    (dict(lambda_value=1.5), "LAMBDA must be in"),
])
def test_clear_errors(kwargs, msg):
    f = torch.randn(20, 4)
    args = dict(k1=5, k2=2, lambda_value=0.3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        re_ranking(f[:5], f[5:], **args)


def test_nan_features_rejected():
    f = torch.randn(20, 4)
    f[7, 1] = float("inf")
    with pytest.raises(ValueError, match=r"gallery features contain NaN/inf values in 1 of 15 rows \(rows 2\)"):
        re_ranking(f[:5], f[5:], 3, 2, 0.3)
