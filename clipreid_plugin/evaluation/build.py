"""Evaluator registry and the builder the trainer calls for each test set."""

from typing import Optional

from clipreid_plugin.data import DATASET_REGISTRY
from clipreid_plugin.utils.registry import Registry

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator", "dataset_uses_random_gallery"]

EVALUATOR_REGISTRY = Registry("EVALUATOR", config_keys=["TEST.EVALUATOR"])
EVALUATOR_REGISTRY.__doc__ = """Evaluators, constructed as ``cls(cfg, num_query=..., dataset_name=..., output_dir=...,
random_gallery=...)`` (the configurable convention, :mod:`clipreid_plugin.config.configurable`)."""


def dataset_uses_random_gallery(dataset_name: str) -> bool:
    """Whether the registered dataset class asks for the random-gallery protocol (VehicleID).

    A dataset that is not registered counts as a fixed query/gallery split.
    """
    try:
        cls = DATASET_REGISTRY.get(dataset_name)
    except KeyError:
        return False
    return bool(getattr(cls, "random_gallery", False))


def build_evaluator(cfg, dataset_name: str, num_query: int, output_dir: Optional[str] = None):
    """Build the evaluator named by TEST.EVALUATOR for one test set.

    Args:
        cfg: the config.
        dataset_name: registered dataset name (decides the random-gallery protocol).
        num_query: number of query images at the start of the test loader (0 for VehicleID).
        output_dir: where TEST.SAVE_RESULTS writes ``<dataset>_results.npz`` (None = nowhere).

    Returns:
        A DatasetEvaluator.
    """
    random_gallery = dataset_uses_random_gallery(dataset_name)
    return EVALUATOR_REGISTRY.build(cfg.TEST.EVALUATOR, cfg, key="TEST.EVALUATOR",
                                    num_query=0 if random_gallery else num_query, dataset_name=dataset_name,
                                    output_dir=output_dir, random_gallery=random_gallery)
