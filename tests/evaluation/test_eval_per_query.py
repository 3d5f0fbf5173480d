"""Per-query results of every evaluation (``<dataset>_per_query.npz``): AP, first-match rank, INP,
optional top-k and per-gallery-camera breakdown, checked against a brute-force ranking."""

import os

import numpy as np
import torch

from clipreid_plugin.config import get_cfg
from clipreid_plugin.evaluation import ReidEvaluator
from clipreid_plugin.evaluation.results import PER_QUERY_KEYS, load_per_query, per_query_file

from eval_toy_data import normalised_squared_distances, toy_eval_set


def _brute_force(dist, q_pids, g_pids, q_cams, g_cams, gallery_mask=None):
    """The Market-1501 protocol written out per query: a stable argsort of the kept gallery.

    Returns: (first_rank, ap, inp, topk lists of kept gallery indices) per query; 0 / NaN where
    the query has no kept match.
    """
    first, ap, inp, order_kept = [], [], [], []
    for i in range(dist.shape[0]):
        keep = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        if gallery_mask is not None:
            keep &= gallery_mask
        cols = np.flatnonzero(keep)
        order = cols[np.argsort(dist[i, cols], kind="stable")]
        hits = g_pids[order] == q_pids[i]
        order_kept.append(order)
        if not hits.any():
            first.append(0), ap.append(np.nan), inp.append(np.nan)
            continue
        ranks = np.flatnonzero(hits) + 1
        first.append(ranks[0])
        ap.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inp.append(len(ranks) / ranks[-1])
    return np.array(first), np.array(ap), np.array(inp), order_kept


def _evaluate(cfg, data, out_dir, name="toy"):
    ev = ReidEvaluator(cfg, num_query=data["num_query"], dataset_name=name, output_dir=str(out_dir))
    feats, pids, camids = data["feats"], data["pids"], data["camids"]
    for s in range(0, len(feats), 64):
        e = min(s + 64, len(feats))
        ev.process({"targets": pids[s:e], "camids": camids[s:e], "img_paths": [f"img_{i}.jpg" for i in range(s, e)]},
                   feats[s:e])
    return ev.evaluate()


def _problem():
    data = toy_eval_set()
    nq = data["num_query"]
    pids, cams = data["pids"].numpy(), data["camids"].numpy()
    dist = normalised_squared_distances(data["feats"], nq)
    return data, dist, pids[:nq], pids[nq:], cams[:nq], cams[nq:]


def test_every_evaluation_writes_per_query_results_matching_a_brute_force_ranking(tmp_path):
    data, dist, qp, gp, qc, gc = _problem()
    metrics = _evaluate(get_cfg(), data, tmp_path)
    per_query = load_per_query(per_query_file(str(tmp_path), "toy"))
    assert set(PER_QUERY_KEYS) <= set(per_query) and "topk_indices" not in per_query  # extras only when asked

    first, ap, inp, _ = _brute_force(dist, qp, gp, qc, gc)
    valid = first > 0
    assert valid.sum() == 48  # two toy queries have no match in another camera
    np.testing.assert_array_equal(per_query["first_rank"], first)
    np.testing.assert_allclose(per_query["ap"][valid], ap[valid], rtol=1e-12)
    np.testing.assert_allclose(per_query["inp"][valid], inp[valid], rtol=1e-12)
    assert np.isnan(per_query["ap"][~valid]).all() and np.isnan(per_query["inp"][~valid]).all()
    np.testing.assert_array_equal(per_query["query_pids"], qp)
    np.testing.assert_array_equal(per_query["query_camids"], qc)
    assert per_query["query_paths"].tolist() == [f"img_{i}.jpg" for i in range(len(qp))]
    # the run's metrics are the means of these per-query numbers
    assert abs(np.nanmean(per_query["ap"]) * 100 - metrics["mAP"]) < 1e-9
    assert abs(np.mean(first[valid] == 1) * 100 - metrics["Rank-1"]) < 1e-9
    assert abs(np.nanmean(per_query["inp"]) * 100 - metrics["mINP"]) < 1e-9


def test_top_k_and_gallery_camera_breakdown_on_request(tmp_path):
    data, dist, qp, gp, qc, gc = _problem()
    cfg = get_cfg()
    cfg.TEST.PER_QUERY.TOPK = 5
    cfg.TEST.PER_QUERY.CAMERA_PAIRS = True
    _evaluate(cfg, data, tmp_path)
    per_query = load_per_query(per_query_file(str(tmp_path), "toy"))

    _, _, _, order = _brute_force(dist, qp, gp, qc, gc)
    np.testing.assert_array_equal(per_query["topk_indices"], np.stack([o[:5] for o in order]))
    np.testing.assert_allclose(per_query["topk_distances"], np.stack([dist[i, o[:5]] for i, o in enumerate(order)]),
                               rtol=1e-6)
    np.testing.assert_array_equal(per_query["gallery_pids"], gp)
    assert len(per_query["gallery_paths"]) == len(gp)

    cameras = per_query["gallery_cameras"]
    assert cameras.tolist() == sorted(set(gc.tolist()))
    for j, cam in enumerate(cameras):
        first, ap, _, _ = _brute_force(dist, qp, gp, qc, gc, gallery_mask=gc == cam)
        np.testing.assert_array_equal(per_query["first_rank_by_gallery_camera"][:, j], first)
        ok = first > 0
        np.testing.assert_allclose(per_query["ap_by_gallery_camera"][ok, j], ap[ok], rtol=1e-12)
        assert np.isnan(per_query["ap_by_gallery_camera"][~ok, j]).all()
        # a query's own camera holds none of its (kept) matches under the Market protocol
        assert (per_query["first_rank_by_gallery_camera"][qc == cam, j] == 0).all()


def test_reranked_evaluation_keeps_the_plain_per_query_file(tmp_path):
    data = toy_eval_set()
    _evaluate(get_cfg(), data, tmp_path)
    plain = load_per_query(per_query_file(str(tmp_path), "toy"))
    cfg = get_cfg()
    cfg.TEST.RERANK.ENABLED = True
    cfg.TEST.RERANK.K1, cfg.TEST.RERANK.K2 = 6, 2
    _evaluate(cfg, data, tmp_path)
    assert os.path.isfile(os.path.join(tmp_path, "toy_per_query_rerank.npz"))
    again = load_per_query(per_query_file(str(tmp_path), "toy"))
    np.testing.assert_array_equal(again["ap"], plain["ap"])
    torch.testing.assert_close(torch.from_numpy(again["first_rank"]), torch.from_numpy(plain["first_rank"]))
