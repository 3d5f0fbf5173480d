"""The model of an evaluation-only run (``--eval-only``, extraction, search, export), built from a
checkpoint alone: its stored config fills the data-dependent keys, so no training data and no
pretrained file is read."""

import logging

import yaml

from clipreid_plugin.config import CfgNode, DataInfo, data_dependent_keys, fill_data_dependent_keys, lookup_key
from clipreid_plugin.data import DatasetError, build_train_samples, train_data_info
from clipreid_plugin.modeling import build_model
from clipreid_plugin.utils.checkpoint import load_model_weights, read_checkpoint_metadata

__all__ = ["build_evaluation_model"]


def build_evaluation_model(cfg: CfgNode, weights: str):
    """The model a checkpoint holds, ready for evaluation, built without training data.

    Data-dependent keys left empty are taken from the checkpoint's stored config (this
    toolkit's checkpoints), else from the training split when its folder exists (no loader, no
    batch checks), else they stay 0 (no classifier: not needed to evaluate). Every tensor must
    come from the checkpoint (unless ``MODEL.ALLOW_PARTIAL_WEIGHTS``), so no pretrained file
    is read.

    Args:
        cfg: the config.
        weights: the checkpoint.

    Returns:
        (model in eval mode, the config it was built from).
    """
    logger = logging.getLogger(__name__)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    stored = read_checkpoint_metadata(weights).get("config")
    if stored:
        saved = yaml.safe_load(stored) or {}
        for key in data_dependent_keys():
            node, leaf = lookup_key(cfg, key)
            saved_node, saved_leaf = lookup_key(saved, key)
            if node is not None and node[leaf] in (0, "") and saved_node is not None \
                    and saved_node[saved_leaf] not in (None, 0, ""):
                node[leaf] = saved_node[saved_leaf]
        cfg.freeze()
    else:
        cfg.freeze()
        try:
            samples, datasets = build_train_samples(cfg)
            info = train_data_info(samples, datasets)
        except DatasetError as e:
            logger.info(f"No training data to size the model from ({e}); the data-dependent keys keep their config "
                        f"values.")
            info = DataInfo(0, 0, 0, None)
        cfg = fill_data_dependent_keys(cfg, info)
    model = build_model(cfg)
    load_model_weights(model, weights, allow_partial=cfg.MODEL.ALLOW_PARTIAL_WEIGHTS)
    return model.eval(), cfg
