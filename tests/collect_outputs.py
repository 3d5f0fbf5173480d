"""A DatasetEvaluator that keeps what ``inference_on_dataset`` computes: the tests' view of an
evaluation forward (flip averaging and autocast included) without any metric."""

import torch

from clipreid_plugin.evaluation.evaluator import DatasetEvaluator


class CollectOutputs(DatasetEvaluator):
    """Collects every batch's outputs; ``evaluate`` returns them concatenated, in loader order."""

    def reset(self):
        self.out = []

    def process(self, inputs, outputs):
        self.out.append(outputs)

    def evaluate(self):
        return torch.cat(self.out)
