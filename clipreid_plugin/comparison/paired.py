"""Paired comparison of two methods on the same queries: differences with bootstrap intervals.

Two runs evaluated on the same query set give, for every query, each method's AP, whether its
first match is at rank 1, and its INP (``<dataset>_per_query.npz``). The difference of the means
(mAP, Rank-1, mINP, in percentage points) is uncertain because the queries are a sample of the
people a method will meet. :func:`cluster_bootstrap` estimates that uncertainty by resampling
**identities** with replacement (a cluster bootstrap): the queries of one person stay together,
because they are not independent (the same person is easy or hard for both methods on every one
of their images). Resampling single images would treat 10 images of one person as 10
independent observations and give intervals that are too narrow. Both methods are resampled with
the same draw (paired), so what varies between them is only what differs on each query.

With several seeds per method, each query's numbers are first averaged over the seeds; the
interval is then about the seed-averaged methods (seed spread is in the table's ``± std``).
"""

from typing import Dict, List, Optional, Sequence

import numpy as np

from clipreid_plugin.utils.errors import InvalidInputError

__all__ = ["PAIRED_METRICS", "query_metrics", "cluster_bootstrap", "check_same_queries", "compare_per_query",
           "disagreement_order"]

PAIRED_METRICS = ("mAP", "Rank-1", "mINP")


def query_metrics(per_query: Dict[str, np.ndarray]) -> np.ndarray:
    """Per-query contributions to mAP, Rank-1 and mINP, in percent, for the valid queries.

    Args:
        per_query: a per-query file's arrays (``ap``, ``first_rank``, ``inp``).

    Returns:
        (num_valid, 3) float64: AP x 100, 100 when the first match is at rank 1 else 0, INP x 100
        (their means are the evaluator's mAP, Rank-1 and mINP).
    """
    valid = per_query["first_rank"] > 0
    return np.stack([per_query["ap"][valid] * 100.0, (per_query["first_rank"][valid] == 1) * 100.0,
                     per_query["inp"][valid] * 100.0], axis=1)


def cluster_bootstrap(values: np.ndarray, clusters: np.ndarray, num_resamples: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> Dict[str, np.ndarray]:
    """Percentile bootstrap interval of column means, resampling clusters (identities) with replacement.

    Each resample draws as many clusters as there are, with replacement, and takes the mean over
    every query of the drawn clusters (a cluster drawn twice counts twice). Vectorised: the draws
    become a (resamples x clusters) count matrix ``W``; with ``S`` the per-cluster sums and
    ``n`` the per-cluster query counts, the resampled means are ``(W S) / (W n)``.

    Args:
        values: (Q, M) per-query values (e.g. differences of two methods, one column per metric).
        clusters: (Q,) cluster label of each query (its identity).
        num_resamples: bootstrap resamples.
        confidence: interval coverage (0.95 = 2.5th to 97.5th percentile).
        seed: seed of the resampling (the result is reproducible).

    Returns:
        ``{"mean": (M,), "low": (M,), "high": (M,)}`` (the mean over the actual queries and the
        interval's ends).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if len(values) == 0:
        raise InvalidInputError("No query to compare: the per-query results have no valid query.")
    _, labels = np.unique(np.asarray(clusters), return_inverse=True)
    num = int(labels.max()) + 1
    sums = np.stack([np.bincount(labels, weights=values[:, m], minlength=num) for m in range(values.shape[1])], 1)
    counts = np.bincount(labels, minlength=num).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num, size=(num_resamples, num))
    draws += (np.arange(num_resamples) * num)[:, None]
    weights = np.bincount(draws.ravel(), minlength=num_resamples * num).reshape(num_resamples, num).astype(np.float64)
    means = (weights @ sums) / (weights @ counts)[:, None]
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return {"mean": values.mean(0), "low": low, "high": high}


def _query_key(per_query: Dict[str, np.ndarray]):
    names = [p.replace("\\", "/").rsplit("/", 1)[-1] for p in per_query["query_paths"].tolist()]
    return per_query["query_pids"].tolist(), per_query["query_camids"].tolist(), names


def check_same_queries(runs: Sequence[Dict[str, np.ndarray]], names: Sequence[str]) -> None:
    """Raise when the runs were not evaluated on the same queries (identities, cameras and image
    file names, in the same order).

    Args:
        runs: per-query arrays of each run.
        names: how to name each run in the message (its folder).

    Raises:
        InvalidInputError: one line naming the first two runs that differ.
    """
    ref = _query_key(runs[0])
    for run, name in zip(runs[1:], names[1:]):
        key = _query_key(run)
        if key != ref:
            what = (f"{len(ref[0])} vs {len(key[0])} queries" if len(key[0]) != len(ref[0]) else
                    "the same number of queries but other images or labels")
            raise InvalidInputError(f"Cannot compare {names[0]} with {name}: they were evaluated on different query "
                                    f"sets ({what}; another dataset or split?).")


def compare_per_query(runs_a: Sequence[Dict[str, np.ndarray]], runs_b: Sequence[Dict[str, np.ndarray]],
                      names_a: Sequence[str], names_b: Sequence[str], num_resamples: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> Dict:
    """Paired comparison of method B against method A (the reference) on the same queries.

    Args:
        runs_a, runs_b: per-query arrays of each seed's run of A and of B.
        names_a, names_b: their folders, for error messages.
        num_resamples, confidence, seed: see :func:`cluster_bootstrap`.

    Returns:
        ``{"metrics": {metric: {"a", "b", "diff", "low", "high"}}`` (percent; ``diff`` = B - A
        with its interval), ``"b_wins"`` / ``"a_wins"`` / ``"ties"``: shares of queries where
        B's seed-averaged AP is higher / lower / equal; ``"num_queries"``,
        ``"num_identities"``, ``"seeds_a"``, ``"seeds_b"``, ``"confidence"``,
        ``"num_resamples"``.

    Raises:
        InvalidInputError: the runs were evaluated on different query sets.
    """
    runs, names = list(runs_a) + list(runs_b), list(names_a) + list(names_b)
    check_same_queries(runs, names)
    a = np.mean([query_metrics(r) for r in runs_a], axis=0)
    b = np.mean([query_metrics(r) for r in runs_b], axis=0)
    pids = runs[0]["query_pids"][runs[0]["first_rank"] > 0]
    boot = cluster_bootstrap(b - a, pids, num_resamples, confidence, seed)
    metrics = {m: {"a": float(a[:, j].mean()), "b": float(b[:, j].mean()), "diff": float(boot["mean"][j]),
                   "low": float(boot["low"][j]), "high": float(boot["high"][j])}
               for j, m in enumerate(PAIRED_METRICS)}
    ap_a, ap_b = a[:, 0], b[:, 0]
    return {"metrics": metrics, "b_wins": float(np.mean(ap_b > ap_a)), "a_wins": float(np.mean(ap_a > ap_b)),
            "ties": float(np.mean(ap_a == ap_b)), "num_queries": int(len(a)), "num_identities": int(len(np.unique(pids))),
            "seeds_a": len(runs_a), "seeds_b": len(runs_b), "confidence": confidence, "num_resamples": num_resamples}


def disagreement_order(runs_a: Sequence[Dict[str, np.ndarray]], runs_b: Sequence[Dict[str, np.ndarray]],
                       limit: Optional[int] = None) -> List[int]:
    """Query indices (into the per-query arrays) where the seed-averaged APs of A and B differ
    most, largest absolute difference first; queries without a match are left out."""
    ap_a = np.mean([r["ap"] for r in runs_a], axis=0)
    ap_b = np.mean([r["ap"] for r in runs_b], axis=0)
    gap = np.abs(ap_b - ap_a)
    order = [int(i) for i in np.argsort(-np.nan_to_num(gap, nan=-1.0), kind="stable") if not np.isnan(gap[i])]
    order = [i for i in order if gap[i] > 0]
    return order[:limit] if limit else order
