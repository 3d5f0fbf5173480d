"""Datasets, registered in DATASET_REGISTRY by class name (and the reference's lowercase names)."""

from .bases import DATASET_REGISTRY, DatasetError, ReIDDataset
from .market1501 import Market1501
from .dukemtmc import DukeMTMC, OccludedDuke
from .msmt17 import MSMT17
from .veri import VeRi
from .vehicleid import VehicleID
from .generic import GenericReID
from .synthetic import SyntheticReID

__all__ = ["DATASET_REGISTRY", "DatasetError", "ReIDDataset", "Market1501", "DukeMTMC",
           "OccludedDuke", "MSMT17", "VeRi", "VehicleID", "GenericReID", "SyntheticReID"]
