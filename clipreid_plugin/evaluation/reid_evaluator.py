"""ReidEvaluator: gathers embeddings and computes CMC / mAP / mINP (+ ROC, AQE, re-ranking)."""

import logging
import os
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional

import numpy as np
import torch

from clipreid_plugin.config import get_cfg
from clipreid_plugin.config.configurable import configurable
from clipreid_plugin.utils import comm
from clipreid_plugin.utils.errors import ConfigError, InvalidInputError

from .build import EVALUATOR_REGISTRY
from .distance import check_features, choose_device, normalize_features, pairwise_distance_chunks
from .evaluator import DatasetEvaluator
from .query_expansion import aqe
from .rank import RankAccumulator, RankResult
from .rerank import re_ranking_chunks
from .results import per_query_file, save_per_query_npz, save_ranking_npz

__all__ = ["ReidEvaluator"]

logger = logging.getLogger(__name__)


@EVALUATOR_REGISTRY.register()
class ReidEvaluator(DatasetEvaluator):
    """Query/gallery retrieval evaluation with the reference's protocol (see ``rank.py``).

    Built from a config (``ReidEvaluator(cfg, num_query=..., dataset_name=..., output_dir=...,
    random_gallery=...)``, what :func:`build_evaluator` does) or from plain arguments.

    Args:
        test: the protocol's settings, a ``TEST`` config node (or any object with its attributes);
            None = the defaults (``get_cfg().TEST``).
        num_query: the first ``num_query`` processed images are queries, the rest gallery;
            0 with ``random_gallery``.
        dataset_name: used for log lines and the ``<dataset>_results.npz`` file name.
        output_dir: folder for saved results (TEST.SAVE_RESULTS); None = do not save.
        random_gallery: VehicleID protocol: TEST.NUM_TRIALS draws (seeded by TEST.TRIAL_SEED) of
            one random gallery image per identity, every other image a query, no camera
            filtering; metrics are means over the draws, with ``<metric>_std`` (population std).
    """

    @configurable
    def __init__(self, *, num_query: int, dataset_name: str = "", output_dir: Optional[str] = None,
                 random_gallery: bool = False, test=None):
        self.test = get_cfg().TEST if test is None else test
        self.num_query = int(num_query)
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.random_gallery = random_gallery
        self.reset()

    @classmethod
    def from_config(cls, cfg, num_query: int, dataset_name: str = "", output_dir: Optional[str] = None,
                    random_gallery: bool = False):
        """Arguments from the ``TEST`` node plus the builder's context."""
        return {"num_query": num_query, "dataset_name": dataset_name, "output_dir": output_dir,
                "random_gallery": random_gallery, "test": cfg.TEST}

    def reset(self) -> None:
        self._feats: List[torch.Tensor] = []
        self._pids: List[torch.Tensor] = []
        self._camids: List[torch.Tensor] = []
        self._paths: List[str] = []

    def process(self, inputs: Mapping, outputs: torch.Tensor) -> None:
        n = outputs.shape[0]
        for key in ("targets", "camids"):
            if key not in inputs or len(inputs[key]) != n:
                raise ValueError(f"Batch key {key!r} is missing or does not have {n} entries (one per embedding).")
        self._feats.append(outputs.detach().float().cpu())
        self._pids.append(torch.as_tensor(inputs["targets"]).detach().cpu().long())
        self._camids.append(torch.as_tensor(inputs["camids"]).detach().cpu().long())
        self._paths.extend(inputs.get("img_paths", [""] * n))

    def _gather(self):
        if comm.get_world_size() > 1:
            comm.synchronize()
            parts = comm.all_gather((self._feats, self._pids, self._camids, self._paths))
            if not comm.is_main_process():
                return None
            feats = [f for p in parts for f in p[0]]
            pids = [f for p in parts for f in p[1]]
            camids = [f for p in parts for f in p[2]]
            paths = [x for p in parts for x in p[3]]
        else:
            feats, pids, camids, paths = self._feats, self._pids, self._camids, self._paths
        if not feats:
            raise InvalidInputError(f"ReidEvaluator({self.dataset_name!r}) received no batches: the test loader is empty.")
        return torch.cat(feats), torch.cat(pids), torch.cat(camids), list(paths)

    def evaluate(self) -> "OrderedDict[str, float]":
        gathered = self._gather()
        if gathered is None:
            return OrderedDict()
        feats, pids, camids, paths = gathered
        check_features(feats, f"{self.dataset_name or 'test'} features")
        if self.random_gallery:
            return self._evaluate_random_gallery(feats, pids, camids)
        nq = self.num_query
        if not 0 < nq < feats.shape[0]:
            raise InvalidInputError(f"num_query={nq} must be between 1 and {feats.shape[0] - 1} "
                                    f"(the {feats.shape[0]} test images are queries first, then gallery).")
        res, qf, gf, by_camera = self._run(feats[:nq], feats[nq:], pids[:nq], pids[nq:], camids[:nq], camids[nq:],
                                           True)
        metrics = self._metrics(res)
        if self.output_dir:
            self._save_per_query(res, by_camera, pids, camids, paths, nq)
        if self.test.SAVE_RESULTS and self.output_dir:
            path = os.path.join(self.output_dir, f"{self.dataset_name or 'test'}_results.npz")
            save_ranking_npz(path, qf.cpu().numpy(), gf.cpu().numpy(), pids[:nq].numpy(), pids[nq:].numpy(),
                             camids[:nq].numpy(), camids[nq:].numpy(), paths[:nq], paths[nq:],
                             res.topk_indices, res.topk_distances)
            logger.info("Saved features and top-%d rankings to %s", self.test.SAVE_TOPK, path)
        return metrics

    def _save_per_query(self, res: RankResult, by_camera: Optional[Dict], pids, camids, paths, nq: int) -> None:
        """Write ``<dataset>_per_query.npz`` (see :func:`~.results.save_per_query_npz`): the
        evaluation's own per-query numbers, what paired comparisons of methods resample."""
        valid = res.valid
        arrays = {"query_pids": pids[:nq].numpy(), "query_camids": camids[:nq].numpy(), "query_paths": paths[:nq],
                  "first_rank": res.first_rank, "ap": np.full(nq, np.nan), "inp": np.full(nq, np.nan)}
        arrays["ap"][valid], arrays["inp"][valid] = res.all_AP, res.all_INP
        k = self.test.PER_QUERY.TOPK
        if k > 0 and res.topk_indices is not None:
            arrays.update(topk_indices=res.topk_indices[:, :k], topk_distances=res.topk_distances[:, :k],
                          gallery_pids=pids[nq:].numpy(), gallery_camids=camids[nq:].numpy(),
                          gallery_paths=paths[nq:])
        if by_camera is not None:
            arrays.update(by_camera)
        path = per_query_file(self.output_dir, self.dataset_name, rerank=self.test.RERANK.ENABLED)
        save_per_query_npz(path, arrays)

    def _run(self, qf, gf, q_pids, g_pids, q_camids, g_camids, remove_same_camera: bool):
        """Features -> (normalise, AQE, normalise) -> distance blocks -> RankResult.

        Returns:
            (RankResult, query features, gallery features, per-gallery-camera arrays or None).
            With ``TEST.PER_QUERY.CAMERA_PAIRS`` every distance block is also ranked against
            each gallery camera's columns alone (about as much work again as the ranking).
        """
        t = self.test
        dev = choose_device(qf)
        qf, gf = qf.to(dev), gf.to(dev)
        if t.FEAT_NORM:
            qf, gf = normalize_features(qf), normalize_features(gf)
        if t.AQE.ENABLED:
            qf, gf = aqe(qf, gf, t.AQE.QE_TIME, t.AQE.QE_K, t.AQE.ALPHA, t.MEMORY_BUDGET_MB)
            if t.FEAT_NORM:
                qf, gf = normalize_features(qf), normalize_features(gf)
        if t.RERANK.ENABLED:
            # The reference re-ranks squared Euclidean distances whatever TEST.METRIC says.
            chunks = re_ranking_chunks(qf, gf, t.RERANK.K1, t.RERANK.K2, t.RERANK.LAMBDA, t.MEMORY_BUDGET_MB, dev)
        else:
            chunks = pairwise_distance_chunks(qf, gf, t.METRIC, memory_budget_mb=t.MEMORY_BUDGET_MB)
        acc = RankAccumulator(q_pids, q_camids, g_pids, g_camids, max_rank=t.MAX_RANK,
                              remove_same_camera=remove_same_camera,
                              topk=max(t.SAVE_TOPK if t.SAVE_RESULTS else 0, t.PER_QUERY.TOPK),
                              roc_fprs=t.ROC.FPRS if t.ROC.ENABLED else (), device=dev)
        cameras, per_camera = [], []
        if t.PER_QUERY.CAMERA_PAIRS:
            for cam in torch.unique(g_camids).tolist():
                cols = torch.nonzero(g_camids == cam).flatten()
                cameras.append(cam)
                per_camera.append((cols.to(dev), RankAccumulator(q_pids, q_camids, g_pids[cols], g_camids[cols],
                                                                 max_rank=1, remove_same_camera=remove_same_camera,
                                                                 device=dev)))
        for start, block in chunks:
            acc.add(start, block)
            for cols, cam_acc in per_camera:
                cam_acc.add(start, block.index_select(1, cols.to(block.device)))
        by_camera = None
        if per_camera:
            parts = [cam_acc.per_query() for _, cam_acc in per_camera]
            by_camera = {"gallery_cameras": np.asarray(cameras, np.int64),
                         "ap_by_gallery_camera": np.stack([p["ap"] for p in parts], 1),
                         "first_rank_by_gallery_camera": np.stack([p["first_rank"] for p in parts], 1)}
        return acc.result(), qf, gf, by_camera

    def _metrics(self, res: RankResult) -> "OrderedDict[str, float]":
        out: "OrderedDict[str, float]" = OrderedDict()
        for r in self.test.CMC_RANKS:
            if 1 <= r <= len(res.cmc):
                out[f"Rank-{r}"] = float(res.cmc[r - 1]) * 100
        out["mAP"] = float(np.mean(res.all_AP)) * 100
        out["mINP"] = float(np.mean(res.all_INP)) * 100
        for f, tpr in res.roc.items():
            out[f"TPR@FPR={f:g}"] = tpr * 100
        out["num_valid_query"] = res.num_valid
        out["num_skipped_query"] = int(len(res.valid) - res.num_valid)
        if out["num_skipped_query"]:
            logger.info("%s: %d queries have no match in the gallery and were skipped.",
                        self.dataset_name, out["num_skipped_query"])
        return out

    def _evaluate_random_gallery(self, feats, pids, camids) -> "OrderedDict[str, float]":
        t = self.test
        if t.NUM_TRIALS < 1:
            raise ConfigError(f"TEST.NUM_TRIALS must be >= 1 for the random-gallery protocol, got {t.NUM_TRIALS}.")
        rng = np.random.RandomState(t.TRIAL_SEED)
        pid_np = pids.numpy()
        groups = [np.flatnonzero(pid_np == p) for p in np.unique(pid_np)]
        if all(len(g) < 2 for g in groups):
            raise InvalidInputError("Random-gallery protocol needs identities with at least 2 test images; none has.")
        trials: Dict[str, List[float]] = {}
        for _ in range(t.NUM_TRIALS):
            g_idx = np.sort(np.array([g[rng.randint(len(g))] for g in groups]))
            is_g = np.zeros(len(pid_np), dtype=bool)
            is_g[g_idx] = True
            q_idx = np.flatnonzero(~is_g)
            qi, gi = torch.from_numpy(q_idx), torch.from_numpy(g_idx)
            res, _, _, _ = self._run(feats[qi], feats[gi], pids[qi], pids[gi], camids[qi], camids[gi], False)
            for k, v in self._metrics(res).items():
                trials.setdefault(k, []).append(v)
        out: "OrderedDict[str, float]" = OrderedDict()
        for k, vals in trials.items():
            if k.startswith("num_"):
                out[k] = int(round(float(np.mean(vals))))
            else:
                out[k] = float(np.mean(vals))
                out[f"{k}_std"] = float(np.std(vals))
        out["num_trials"] = int(t.NUM_TRIALS)
        return out
