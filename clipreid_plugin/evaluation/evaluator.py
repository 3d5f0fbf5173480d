"""Evaluator interface and the loop that feeds a model's embeddings to it."""

import logging
import sys
import time
from collections import OrderedDict
from typing import Iterable, Mapping, Optional

import torch

from clipreid_plugin.utils.device import autocast

__all__ = ["DatasetEvaluator", "inference_on_dataset", "flip_images"]

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Base class: collects (inputs, outputs) pairs batch by batch, then computes metrics.

    Subclasses implement the three methods. In distributed runs every process calls
    ``process`` on its shard; ``evaluate`` gathers and returns the metrics on the main
    process and ``{}`` elsewhere.
    """

    def reset(self) -> None:
        """Forget everything processed so far (called before each evaluation)."""
        raise NotImplementedError

    def process(self, inputs: Mapping, outputs: torch.Tensor) -> None:
        """Record one batch.

        Args:
            inputs: the batch dict (``targets``, ``camids``, ``img_paths``...).
            outputs: (B, D) embeddings the model returned for it.
        """
        raise NotImplementedError

    def evaluate(self) -> "OrderedDict[str, float]":
        """Returns: metrics (percent) on the main process, ``{}`` on the others."""
        raise NotImplementedError


def flip_images(images: torch.Tensor) -> torch.Tensor:
    """Returns: the batch mirrored horizontally (last dimension reversed)."""
    return torch.flip(images, dims=[3])


def inference_on_dataset(model: torch.nn.Module, data_loader: Iterable, evaluator: DatasetEvaluator,
                         flip_test: bool = False, log_period: int = 50,
                         amp_dtype: Optional[torch.dtype] = None) -> "OrderedDict[str, float]":
    """Run ``model`` over ``data_loader`` in eval mode and return ``evaluator.evaluate()``.

    The model's training mode is restored afterwards. Inputs are not moved here (the model
    moves them to its device). With ``flip_test`` the embedding is the mean of the embeddings of
    the image and of its horizontal mirror. Progress is a tqdm bar when stderr is a terminal,
    otherwise a log line every ``log_period`` batches.

    Args:
        model: returns (B, D) embeddings in eval mode for a batch dict.
        data_loader: yields batch dicts.
        evaluator: receives every batch.
        flip_test: average with the mirrored image (TEST.FLIP.ENABLED).
        log_period: batches between log lines when not on a terminal.
        amp_dtype: autocast dtype of the forward pass (``TEST.PRECISION``; None = float32); the
            embeddings reach the evaluator in float32.

    Returns:
        The evaluator's metrics.
    """
    evaluator.reset()
    try:
        total = len(data_loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    use_bar = sys.stderr.isatty()
    iterator = data_loader
    if use_bar:
        from tqdm import tqdm  # noqa: PLC0415 - optional (not a dependency): a progress bar where it is installed

        iterator = tqdm(data_loader, total=total, desc="inference", leave=False)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        device_type = next(model.parameters()).device.type
        with torch.no_grad(), autocast(device_type, amp_dtype):
            for i, batch in enumerate(iterator):
                if flip_test:
                    # mirrored before the first forward: a model that normalises its input in place
                    # (as fast-reid's do) must not see an already normalised copy (peer bug: the
                    # flipped images were normalised twice)
                    flipped = dict(batch)
                    flipped["images"] = flip_images(batch["images"])
                outputs = model(batch).float()
                if flip_test:
                    outputs = (outputs + model(flipped).float()) / 2.0
                evaluator.process(batch, outputs)
                if not use_bar and log_period and (i + 1) % log_period == 0:
                    logger.info("Inference: batch %d/%s, %.1f s", i + 1, total if total is not None else "?",
                                time.perf_counter() - start)
    finally:
        model.train(was_training)
    logger.info("Inference done in %.1f s", time.perf_counter() - start)
    return evaluator.evaluate()
