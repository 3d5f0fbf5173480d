"""The paired identity (cluster) bootstrap: coverage on synthetic problems with a known difference.

Each repetition draws a fresh sample of identities from a known population and builds two
distance matrices: method A ranks every query's single true match second (one decoy before it:
AP = INP = 0.5, no rank-1 hit); method B ranks it first (AP = INP = 1, rank-1 hit) on the queries
of the "improved" identities (each identity improved with probability P_IMPROVED, all its
queries together), and second elsewhere. The per-query numbers come from the evaluator's
ranking, and the population differences are known exactly: mAP and mINP +50 x P_IMPROVED points,
Rank-1 +100 x P_IMPROVED points.
"""

import numpy as np
import pytest
import torch

from clipreid_plugin.comparison.paired import (PAIRED_METRICS, check_same_queries, cluster_bootstrap,
                                               compare_per_query, query_metrics)
from clipreid_plugin.evaluation.rank import RankAccumulator
from clipreid_plugin.utils.errors import InvalidInputError

NUM_IDS = 150
P_IMPROVED = 0.4
REPETITIONS = 100
TRUTH = {"mAP": 50 * P_IMPROVED, "Rank-1": 100 * P_IMPROVED, "mINP": 50 * P_IMPROVED}


def _evaluate(q_pids, match_dist, rng_noise):
    """Per-query arrays (as ``<dataset>_per_query.npz`` holds them) of a distance matrix in which
    query i's match (gallery item q_pids[i]) is at ``match_dist[i]`` and a decoy (the next
    identity's image) at 1.0; every other item is farther than 10."""
    nq = len(q_pids)
    dist = 10 + rng_noise.random((nq, NUM_IDS))
    dist[np.arange(nq), q_pids] = match_dist
    dist[np.arange(nq), (q_pids + 1) % NUM_IDS] = 1.0
    acc = RankAccumulator(q_pids, np.zeros(nq), np.arange(NUM_IDS), np.ones(NUM_IDS))
    acc.add(0, torch.from_numpy(dist).float())
    out = acc.per_query()
    out.update(query_pids=q_pids, query_camids=np.zeros(nq, np.int64),
               query_paths=np.array([f"q{i}.jpg" for i in range(nq)]))
    return out


def _draw(rng, effect):
    """One repetition: queries (1-5 per identity), then A's and B's per-query arrays.

    effect "real": B better on the improved identities; "none": B better on a random 30% of the
    identities and A better (by as much) on another 30%, so the true difference is 0.
    """
    per_id = rng.integers(1, 6, NUM_IDS)
    q_pids = np.repeat(np.arange(NUM_IDS), per_id)
    u = rng.random(NUM_IDS)[q_pids]
    dist_a, dist_b = np.full(len(q_pids), 1.5), np.full(len(q_pids), 1.5)  # 1.5: behind the decoy, rank 2
    if effect == "real":
        dist_b[u < P_IMPROVED] = 0.5
    else:
        dist_b[u < 0.3] = 0.5
        dist_a[u > 0.7] = 0.5
    return _evaluate(q_pids, dist_a, rng), _evaluate(q_pids, dist_b, rng)


def test_evaluator_per_query_numbers_are_those_the_problem_builds():
    a, b = _draw(np.random.default_rng(0), "real")
    improved = b["first_rank"] == 1
    np.testing.assert_array_equal(a["first_rank"], 2)
    np.testing.assert_allclose(query_metrics(a), np.tile([50.0, 0.0, 50.0], (len(improved), 1)))
    np.testing.assert_allclose(query_metrics(b)[improved], np.tile([100.0, 100.0, 100.0], (improved.sum(), 1)))


def test_interval_covers_a_known_difference_and_excludes_zero():
    rng = np.random.default_rng(0)
    covered = {m: 0 for m in PAIRED_METRICS}
    excludes_zero = {m: 0 for m in PAIRED_METRICS}
    covered_image_level = 0
    for rep in range(REPETITIONS):
        a, b = _draw(rng, "real")
        res = compare_per_query([a], [b], ["A"], ["B"], seed=rep)
        for m in PAIRED_METRICS:
            r = res["metrics"][m]
            covered[m] += r["low"] <= TRUTH[m] <= r["high"]
            excludes_zero[m] += r["low"] > 0
        # the same data, resampling images as if independent: too narrow (queries of one
        # person move together), which is why the comparison resamples identities
        diff = query_metrics(b)[:, 0] - query_metrics(a)[:, 0]
        naive = cluster_bootstrap(diff, np.arange(len(diff)), seed=rep)
        covered_image_level += naive["low"][0] <= TRUTH["mAP"] <= naive["high"][0]
    for m in PAIRED_METRICS:
        assert covered[m] >= 93, (m, covered)
        assert excludes_zero[m] == REPETITIONS, (m, excludes_zero)
    assert covered_image_level < 85, covered_image_level


def test_interval_covers_zero_without_a_difference():
    rng = np.random.default_rng(0)
    covered = {m: 0 for m in PAIRED_METRICS}
    for rep in range(REPETITIONS):
        a, b = _draw(rng, "none")
        res = compare_per_query([a], [b], ["A"], ["B"], seed=rep)
        for m in PAIRED_METRICS:
            covered[m] += res["metrics"][m]["low"] <= 0 <= res["metrics"][m]["high"]
        assert 0 < res["b_wins"] < 1 and 0 < res["a_wins"] < 1
    for m in PAIRED_METRICS:
        assert covered[m] >= 93, (m, covered)


def test_identical_methods_give_a_zero_interval_and_only_ties():
    a, _ = _draw(np.random.default_rng(1), "real")
    res = compare_per_query([a, a], [a], ["A seed 1", "A seed 2"], ["B"])
    for m in PAIRED_METRICS:
        assert res["metrics"][m]["low"] == res["metrics"][m]["diff"] == res["metrics"][m]["high"] == 0.0
    assert res["ties"] == 1.0 and res["seeds_a"] == 2 and res["num_identities"] == NUM_IDS


def test_seed_averaging_and_the_win_shares_by_hand():
    def run(ap, first):
        ap = np.asarray(ap, float)
        return {"ap": ap, "inp": ap, "first_rank": np.asarray(first), "query_pids": np.array([0, 0, 1]),
                "query_camids": np.zeros(3, np.int64), "query_paths": np.array(["a.jpg", "b.jpg", "c.jpg"])}
    a = [run([0.5, 0.5, 1.0], [2, 2, 1]), run([0.5, 1.0, 1.0], [2, 1, 1])]  # seed means: .5 .75 1
    b = [run([1.0, 0.5, 1.0], [1, 2, 1])]
    res = compare_per_query(a, b, ["a1", "a2"], ["b1"])
    assert res["metrics"]["mAP"]["a"] == pytest.approx(100 * (0.5 + 0.75 + 1.0) / 3)
    assert res["metrics"]["mAP"]["diff"] == pytest.approx(100 * (0.5 - 0.25 + 0) / 3)
    assert res["metrics"]["Rank-1"]["diff"] == pytest.approx(100 * (1 - 0.5 + 0) / 3)
    assert (res["b_wins"], res["a_wins"], res["ties"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_bootstrap_resamples_whole_identities():
    # two identities: one with 3 queries all +1, one with 1 query at 0. A resample holds 0, 1 or
    # 2 copies of the first identity, so the only possible means are 0, 3/4 and 1.
    res = cluster_bootstrap(np.array([1.0, 1.0, 1.0, 0.0]), np.array([5, 5, 5, 9]), num_resamples=2000)
    assert res["mean"][0] == 0.75 and res["low"][0] == 0.0 and res["high"][0] == 1.0


def test_other_query_sets_are_a_one_line_error_naming_both_runs():
    a, b = _draw(np.random.default_rng(3), "real")
    short = {k: v[:-1] for k, v in b.items()}
    with pytest.raises(InvalidInputError, match=r"Cannot compare out/a with out/b: .*different query sets"):
        compare_per_query([a], [short], ["out/a"], ["out/b"])
    relabelled = dict(b, query_paths=np.array([f"other{i}.jpg" for i in range(len(b["ap"]))]))
    with pytest.raises(InvalidInputError, match="other images or labels"):
        check_same_queries([a, relabelled], ["out/a", "out/b"])
