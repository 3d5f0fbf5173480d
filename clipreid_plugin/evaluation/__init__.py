"""Evaluation: ReidEvaluator, exact CMC/mAP/mINP in bounded memory, re-ranking, AQE, result tables."""

from .build import EVALUATOR_REGISTRY, build_evaluator
from .evaluator import DatasetEvaluator, inference_on_dataset
from .query_expansion import aqe
from .rank import evaluate_rank
from .reid_evaluator import ReidEvaluator
from .rerank import re_ranking, re_ranking_chunks
from .results import (results_csv, results_markdown, results_table, save_ranking_npz, save_results_csv,
                      save_results_json, save_run_results)

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator", "DatasetEvaluator", "inference_on_dataset", "ReidEvaluator",
           "evaluate_rank", "re_ranking", "re_ranking_chunks", "aqe", "results_table", "results_csv",
           "results_markdown", "save_results_json", "save_results_csv", "save_ranking_npz", "save_run_results"]
