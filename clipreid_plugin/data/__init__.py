"""Data: datasets (DATASET_REGISTRY), transforms, samplers (SAMPLER_REGISTRY) and loaders.

The trainer calls :func:`build_reid_train_loader` and :func:`build_reid_test_loader`;
:func:`build_inference_loader` embeds any list of samples. Every dataset and sampler is chosen
by its registered name.
"""

from .build import (TrainLoader, build_inference_loader, build_reid_test_loader, build_reid_train_loader,
                    build_train_samples, train_data_info)
from .image_dataset import ReIDImageDataset, collate_batch
from .datasets import DATASET_REGISTRY, DatasetError, ReIDDataset
from .datasets.bases import Sample, list_images, relabel, test_splits_only
from .samplers import SAMPLER_REGISTRY, PKSampler, RandomSampler, ReIDSampler, SamplerError
from .transforms import TRANSFORM_REGISTRY, ReIDTransform, build_transforms
from .transforms_autoaugment import AutoAugment

__all__ = [
    "DATASET_REGISTRY", "SAMPLER_REGISTRY", "TRANSFORM_REGISTRY", "AutoAugment", "DatasetError", "SamplerError", "ReIDDataset",
    "TrainLoader", "build_reid_train_loader", "build_reid_test_loader", "build_inference_loader",
    "build_train_samples", "train_data_info", "build_transforms", "ReIDTransform", "ReIDImageDataset",
    "collate_batch", "PKSampler", "RandomSampler", "ReIDSampler", "Sample", "list_images", "relabel",
    "test_splits_only",
]
