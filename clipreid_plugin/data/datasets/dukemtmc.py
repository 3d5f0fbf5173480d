"""DukeMTMC-reID and Occluded-Duke (both under ``<ROOT>/dukemtmcreid/``)."""

from .bases import register_dataset
from .market1501 import Market1501

__all__ = ["DukeMTMC", "OccludedDuke"]


@register_dataset("dukemtmc")
class DukeMTMC(Market1501):
    """DukeMTMC-reID: ``<ROOT>/dukemtmcreid/DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}``.

    Market-style names with 8 cameras; view id 0. Expected: train 702 ids / 16,522 images,
    query 702 / 2,228, gallery 1,110 / 17,661. The reference kept files in file-system order;
    they are sorted here (only the train relabel order could differ, see ``relabel``).
    """

    dataset_dirs = ("dukemtmcreid/DukeMTMC-reID", "DukeMTMC-reID")
    max_pid = 99999
    max_cam = 8


@register_dataset("occ_duke")
class OccludedDuke(Market1501):
    """Occluded-Duke: ``<ROOT>/dukemtmcreid/Occluded_Duke/{bounding_box_train,query,bounding_box_test}``.

    Same parser as Duke; view id 1 as the reference. Expected: train 702 / 15,618,
    query 519 / 2,210, gallery 1,110 / 17,661, 8 cameras.
    """

    dataset_dirs = ("dukemtmcreid/Occluded_Duke", "Occluded_Duke")
    max_pid = 99999
    max_cam = 8
    view_id = 1
