"""A seeded query / gallery set shaped like ../shared/reference/eval_refs.pt, built locally.

For the evaluation tests that need realistic data but no reference tensors (those compare
with eval_refs.pt and skip without it).
"""

import functools

import numpy as np
import torch

NUM_QUERY = 50
NUM_VALID = 48


@functools.lru_cache(maxsize=None)
def _toy_eval_set():
    g = torch.Generator().manual_seed(5)
    centres = torch.randn(62, 64, generator=g)
    q_pids, q_cams = list(range(NUM_QUERY)), [pid % 6 for pid in range(NUM_QUERY)]
    g_pids, g_cams = [], []
    for pid, cam in zip(q_pids, q_cams):
        if pid < NUM_VALID:  # one junk image (the query's camera) and four true matches
            g_cams += [cam] + [(cam + j) % 6 for j in range(1, 5)]
            g_pids += [pid] * 5
        else:  # only the query's camera: no valid match
            g_cams += [cam, cam]
            g_pids += [pid, pid]
    for i in range(300 - len(g_pids)):  # distractor identities 50..61
        g_pids.append(50 + i % 12)
        g_cams.append(i % 6)
    order = torch.randperm(len(g_pids), generator=g)
    pids = torch.tensor(q_pids + [g_pids[i] for i in order.tolist()])
    camids = torch.tensor(q_cams + [g_cams[i] for i in order.tolist()])
    feats = centres[pids] + 1.2 * torch.randn(len(pids), 64, generator=g)
    return feats, pids, camids


def toy_eval_set():
    """Dict like eval_refs.pt's ``inputs``: ``feats`` (350, 64) float32, first ``num_query`` = 50
    rows the queries (identities 0..49, one each), then 300 gallery rows in a seeded random order;
    ``pids``, ``camids`` (0..5).

    Gallery: identities 0..47 have one image from the query's camera (junk, removed by the
    protocol) and four from other cameras; identities 48, 49 have two images from the query's
    camera only, so those two queries have no valid match (48 valid queries); 12 distractor
    identities 50..61 fill the rest. Features = identity centre N(0, 1) + N(0, 1.2^2) noise:
    continuous values, so no distance ties.
    """
    feats, pids, camids = _toy_eval_set()
    return {"feats": feats.clone(), "pids": pids.clone(), "camids": camids.clone(), "num_query": NUM_QUERY}


def normalised_squared_distances(feats: torch.Tensor, num_query: int) -> np.ndarray:
    """The reference protocol's distances written in numpy float64: L2-normalise, then
    ``|q - g|^2`` for every query / gallery pair."""
    f = feats.double().numpy()
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    q, g = f[:num_query], f[num_query:]
    return ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
