"""ReidEvaluator, build_evaluator, inference_on_dataset, AQE, ROC, saving and result tables."""

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from clipreid_plugin.config import get_cfg
from clipreid_plugin.evaluation import (EVALUATOR_REGISTRY, ReidEvaluator, aqe, build_evaluator, evaluate_rank,
                                        inference_on_dataset, results_csv, results_markdown, results_table,
                                        save_results_json)
from clipreid_plugin.evaluation.distance import normalize_features

from eval_toy_data import normalised_squared_distances, toy_eval_set


@pytest.fixture(scope="module")
def refs(reference_dir):
    """../shared/reference/eval_refs.pt: the reference evaluator's inputs and outputs."""
    return torch.load(os.path.join(reference_dir, "eval_refs.pt"), weights_only=True)


def _batches(feats, pids, camids, bs=64):
    for s in range(0, len(feats), bs):
        yield ({"targets": pids[s:s + bs], "camids": camids[s:s + bs],
                "img_paths": [f"img_{i}.jpg" for i in range(s, min(s + bs, len(feats)))]}, feats[s:s + bs])


def _run(cfg, feats, pids, camids, num_query, output_dir=None, random_gallery=False):
    ev = ReidEvaluator(cfg, num_query=num_query, dataset_name="toy", output_dir=output_dir, random_gallery=random_gallery)
    for inputs, out in _batches(feats, pids, camids):
        ev.process(inputs, out)
    return ev.evaluate()


@pytest.mark.parametrize("rerank,prefix", [(False, "r1map"), (True, "r1map_rerank_k50_15")])
def test_reid_evaluator_equals_reference(refs, rerank, prefix):
    i, out = refs["inputs"], refs["outputs"]
    cfg = get_cfg()
    cfg.TEST.RERANK.ENABLED = rerank
    cfg.TEST.RERANK.K1, cfg.TEST.RERANK.K2 = 50, 15
    m = _run(cfg, i["feats"], i["pids"], i["camids"], i["num_query"])
    cmc = out[f"{prefix}_cmc"].numpy()
    for r in (1, 5, 10):
        assert abs(m[f"Rank-{r}"] - 100 * cmc[r - 1]) <= 1e-4
    assert abs(m["mAP"] - 100 * out[f"{prefix}_mAP"]) <= 1e-4
    assert m["num_valid_query"] == 48 and m["num_skipped_query"] == 2
    assert 0 < m["mINP"] <= m["mAP"]


def test_save_results_npz_and_roc(tmp_path):
    """TEST.SAVE_RESULTS: per query the 7 nearest gallery items (same identity and camera left out)
    with their distances, paths, identities and normalised query features; TEST.ROC: TPR at the
    distance thresholds that accept 1% / 10% of the negatives. Expectations from numpy."""
    i = toy_eval_set()
    nq = i["num_query"]
    cfg = get_cfg()
    cfg.TEST.SAVE_RESULTS, cfg.TEST.SAVE_TOPK = True, 7
    cfg.TEST.ROC.ENABLED = True
    cfg.TEST.ROC.FPRS = (0.01, 0.1)
    m = _run(cfg, i["feats"], i["pids"], i["camids"], nq, output_dir=str(tmp_path))
    assert m["num_valid_query"] == 48
    z = np.load(tmp_path / "toy_results.npz")
    dist = normalised_squared_distances(i["feats"], nq)
    qp, gp, qc, gc = (x.numpy() for x in (i["pids"][:nq], i["pids"][nq:], i["camids"][:nq], i["camids"][nq:]))
    # expectation: stable argsort of the distances without same-pid-same-camera items
    for q in range(nq):
        order = [j for j in np.argsort(dist[q], kind="stable") if not (gp[j] == qp[q] and gc[j] == qc[q])]
        assert z["topk_indices"][q].tolist() == order[:7]
        np.testing.assert_allclose(z["topk_distances"][q], dist[q, order[:7]], atol=1e-5)
    assert z["query_paths"][3] == "img_3.jpg" and z["gallery_paths"][0] == f"img_{nq}.jpg"
    np.testing.assert_array_equal(z["gallery_pids"], gp)
    f = i["feats"][:nq].double().numpy()
    np.testing.assert_allclose(z["query_feats"], f / np.linalg.norm(f, axis=1, keepdims=True), atol=1e-6)
    # ROC by brute force over all kept pairs: accepted = distance < threshold, at most f*#neg negatives
    keep = ~((qp[:, None] == gp[None]) & (qc[:, None] == gc[None]))
    pos = dist[keep & (qp[:, None] == gp[None])]
    neg = np.sort(dist[keep & (qp[:, None] != gp[None])])
    for f in (0.01, 0.1):
        thr = neg[int(f * len(neg))]
        assert abs(m[f"TPR@FPR={f:g}"] - 100 * np.mean(pos < thr)) < 1e-9


def _fastreid_aqe(query_feat, gallery_feat, qe_times, qe_k, alpha):
    """fast-reid's evaluation/query_expansion.py (numpy loop)."""
    num_query = query_feat.shape[0]
    all_feat = torch.cat((query_feat, gallery_feat), dim=0)
    norm_feat = torch.nn.functional.normalize(all_feat, p=2, dim=1)
    all_feat = all_feat.numpy()
    for _ in range(qe_times):
        all_feat_list = []
        sims = torch.mm(norm_feat, norm_feat.t()).numpy()
        for sim in sims:
            init_rank = np.argpartition(-sim, range(1, qe_k + 1))
            weights = np.power(sim[init_rank[:qe_k]].reshape((-1, 1)), alpha)
            all_feat_list.append(np.mean(all_feat[init_rank[:qe_k], :] * weights, axis=0))
        all_feat = np.stack(all_feat_list, axis=0)
        norm_feat = torch.nn.functional.normalize(torch.from_numpy(all_feat), p=2, dim=1)
    return all_feat[:num_query], all_feat[num_query:]


def test_aqe_matches_fastreid():
    """Average query expansion equals fast-reid's numpy loop (transcribed above); TEST.AQE runs
    inside the evaluator."""
    data = toy_eval_set()
    f = data["feats"]
    q, g = aqe(f[:50], f[50:], qe_times=2, qe_k=5, alpha=3.0, memory_budget_mb=0.05)
    eq, eg = _fastreid_aqe(f[:50], f[50:], 2, 5, 3.0)
    np.testing.assert_allclose(q.numpy(), eq, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g.numpy(), eg, rtol=1e-5, atol=1e-5)
    cfg = get_cfg()
    cfg.TEST.AQE.ENABLED = True
    m = _run(cfg, f, data["pids"], data["camids"], 50)
    assert m["num_valid_query"] == 48 and 0 <= m["mAP"] <= 100


def test_random_gallery_protocol():
    # 6 identities x 4 images, tight clusters: every draw retrieves perfectly
    g = torch.Generator().manual_seed(0)
    pids = torch.arange(6).repeat_interleave(4)
    feats = torch.randn(6, 8, generator=g)[pids] * 10 + 0.01 * torch.randn(24, 8, generator=g)
    camids = torch.zeros(24, dtype=torch.long)  # same camera everywhere: no filtering must happen
    cfg = get_cfg()
    cfg.TEST.NUM_TRIALS = 3
    m = _run(cfg, feats, pids, camids, 0, random_gallery=True)
    assert m["Rank-1"] == 100.0 and m["mAP"] == 100.0 and m["Rank-1_std"] == 0.0
    assert m["num_valid_query"] == 18 and m["num_trials"] == 3
    # one draw with noisy features equals evaluate_rank on the documented split
    feats = torch.randn(24, 8, generator=g)
    cfg.TEST.NUM_TRIALS, cfg.TEST.TRIAL_SEED = 1, 11
    m = _run(cfg, feats, pids, camids, 0, random_gallery=True)
    rng = np.random.RandomState(11)
    gal = sorted(int(np.flatnonzero(pids.numpy() == p)[rng.randint(4)]) for p in range(6))
    qry = [k for k in range(24) if k not in gal]
    f = normalize_features(feats)
    dist = torch.cdist(f[qry], f[gal]) ** 2
    cmc, ap, _ = evaluate_rank(dist, pids[qry], pids[gal], camids[qry], camids[gal], remove_same_camera=False)
    assert abs(m["Rank-1"] - 100 * cmc[0]) < 1e-4 and abs(m["mAP"] - 100 * np.mean(ap)) < 1e-4


def test_build_evaluator_reads_dataset_flag(monkeypatch):
    from clipreid_plugin.utils.registry import Registry

    reg = Registry("DATASET")

    @reg.register()
    class FakeVehicleID:
        random_gallery = True

    @reg.register()
    class FakeMarket:
        pass

    monkeypatch.setattr("clipreid_plugin.evaluation.build.DATASET_REGISTRY", reg)
    cfg = get_cfg()
    ev = build_evaluator(cfg, "FakeVehicleID", num_query=123, output_dir=None)
    assert isinstance(ev, ReidEvaluator) and ev.random_gallery and ev.num_query == 0
    ev = build_evaluator(cfg, "FakeMarket", num_query=123, output_dir=None)
    assert not ev.random_gallery and ev.num_query == 123
    assert not build_evaluator(cfg, "NotRegistered", 5).random_gallery
    assert "ReidEvaluator" in EVALUATOR_REGISTRY.names()


class _TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 2, 5)
        self.drop = nn.Dropout(0.5)

    def forward(self, batch):
        x = batch["images"].to(next(self.parameters()).device)
        return self.drop(self.proj(x.flatten(1)))


def test_inference_on_dataset_flip_and_mode():
    torch.manual_seed(0)
    model = _TinyModel().train()
    g = torch.Generator().manual_seed(2)
    images = torch.randn(10, 3, 4, 2, generator=g)
    pids = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 4, 4])
    camids = torch.tensor([0] * 4 + [1] * 6)
    loader = [{"images": images[s:s + 4], "targets": pids[s:s + 4], "camids": camids[s:s + 4],
               "viewids": torch.zeros(len(pids[s:s + 4]), dtype=torch.long),
               "img_paths": [str(k) for k in range(s, min(s + 4, 10))]} for s in range(0, 10, 4)]
    cfg = get_cfg()
    for flip in (False, True):
        ev = ReidEvaluator(cfg, num_query=4, dataset_name="toy")
        got = inference_on_dataset(model, loader, ev, flip_test=flip)
        assert model.training  # restored
        with torch.no_grad():
            emb = model.eval().proj(images.flatten(1))
            if flip:
                emb = (emb + model.proj(torch.flip(images, dims=[3]).flatten(1))) / 2
        model.train()
        f = normalize_features(emb)
        dist = torch.cdist(f[:4], f[4:]) ** 2
        cmc, ap, _ = evaluate_rank(dist, pids[:4], pids[4:], camids[:4], camids[4:])
        assert abs(got["Rank-1"] - 100 * cmc[0]) < 1e-4 and abs(got["mAP"] - 100 * np.mean(ap)) < 1e-4


def test_evaluator_errors():
    cfg = get_cfg()
    ev = ReidEvaluator(cfg, num_query=3, dataset_name="toy")
    with pytest.raises(ValueError, match="received no batches"):
        ev.evaluate()
    ev.process({"targets": torch.tensor([1, 2]), "camids": torch.tensor([0, 0])}, torch.randn(2, 4))
    with pytest.raises(ValueError, match="num_query=3 must be between 1 and 1"):
        ev.evaluate()
    with pytest.raises(ValueError, match="'camids' is missing"):
        ev.process({"targets": torch.tensor([1])}, torch.randn(1, 4))


def test_result_tables_and_json(tmp_path):
    res = {"Market1501": {"Rank-1": 95.1234, "mAP": 89.5, "num_valid_query": 3368},
           "MSMT17": {"Rank-1": 88.0, "mAP": 73.25, "mINP": 20.0}}
    table = results_table(res)
    lines = table.splitlines()
    assert lines[0].split("|")[1].strip() == "Dataset" and "mINP" in lines[0]
    assert "95.12" in lines[2] and "3368" in lines[2] and "MSMT17" in lines[3]
    assert results_csv(res).splitlines() == ["dataset,Rank-1,mAP,num_valid_query,mINP",
                                             "Market1501,95.1234,89.5,3368,", "MSMT17,88.0,73.25,,20.0"]
    md = results_markdown(res)
    assert "| Market1501 |" in md and "95.1" in md
    path = tmp_path / "sub" / "results.json"
    save_results_json(str(path), {"a": {"mAP": np.float64(1.5), "n": np.int64(3), "x": float("nan")}})
    assert json.loads(path.read_text()) == {"a": {"mAP": 1.5, "n": 3, "x": "nan"}}
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]
