"""Config keys of the CLIP-ReID plugin: CLIP backbones (open_clip) and the CLIP-ReID method.

Registered as a config extension: a config whose ``PLUGINS`` names the plugin has them, all in
the plugin's own top-level group ``CLIPREID``.
The keys the trainer fills from the training data are declared here too.
"""

import logging

from clipreid_plugin.config import CfgNode as CN
from clipreid_plugin.config import declare_data_dependent_key, register_config_check, register_config_extension
from clipreid_plugin.modeling import HEAD_REGISTRY, LOSS_REGISTRY
from clipreid_plugin.solver import OPTIMIZER_REGISTRY
from clipreid_plugin.utils.errors import ConfigError

from .backbone import _quick_gelu, _stride_size
from .clip_baseline import check_test_feature
from .stage1 import check_phases

__all__ = ["add_clipreid_config", "check_clipreid_config"]

declare_data_dependent_key("CLIPREID.BACKBONE.NUM_CAMERAS", "num_cameras")
declare_data_dependent_key("CLIPREID.BACKBONE.NUM_VIEWS", "num_views")
declare_data_dependent_key("CLIPREID.PROMPT.CLASS_WORD", "kind")
# the plugin's keys that name registered components: checked with the whole config before a run
HEAD_REGISTRY.name_config_key("CLIPREID.PROMPT.HEAD_NAME")
LOSS_REGISTRY.name_config_key("CLIPREID.STAGE1.LOSS_NAMES", training_only=True)
OPTIMIZER_REGISTRY.name_config_key("CLIPREID.STAGE1.OPTIMIZER", training_only=True)


@register_config_extension
def add_clipreid_config(cfg: CN) -> None:
    """Add the CLIP backbone and CLIP-ReID keys to ``cfg`` in place.

    Args:
        cfg: an unfrozen root config.
    """
    _C = cfg
    # Every key of the plugin lives in its own top-level group (the host's groups are the host's).
    _C.CLIPREID = CN()
    # The CLIP image tower (backbone build_clip_backbone).
    _C.CLIPREID.BACKBONE = CN()
    # open_clip model name ("ViT-B-16", "RN50", "ViT-L-14", ...).
    _C.CLIPREID.BACKBONE.MODEL_NAME = "ViT-B-16"
    # open_clip pretrained tag (e.g. "openai"); needs the network or a filled open_clip cache.
    _C.CLIPREID.BACKBONE.PRETRAINED_TAG = ""
    # Patch-embedding stride (height, width); 12 = overlapping patches ("OLP").
    _C.CLIPREID.BACKBONE.STRIDE_SIZE = [16, 16]
    # Side information embedding added to the class token.
    _C.CLIPREID.BACKBONE.SIE_CAMERA = False
    _C.CLIPREID.BACKBONE.SIE_VIEW = False
    _C.CLIPREID.BACKBONE.SIE_COE = 3.0
    _C.CLIPREID.BACKBONE.GRAD_CHECKPOINTING = False
    # Number of distinct camera / view ids of the training set, sizing the SIE table; 0 = the
    # trainer fills them from the train loader (like MODEL.HEADS.NUM_CLASSES).
    _C.CLIPREID.BACKBONE.NUM_CAMERAS = 0
    _C.CLIPREID.BACKBONE.NUM_VIEWS = 0
    # Activation of the CLIP MLPs: "auto" = QuickGELU for OpenAI files and random init (CLIP-ReID
    # checkpoints), the tag's / model config's choice for open_clip tags and checkpoints;
    # "on" / "off" force it (OpenAI-trained weights need QuickGELU, else features are wrong).
    _C.CLIPREID.BACKBONE.QUICK_GELU = "auto"

    # ----- CLIP-ReID method (prompt learner, image-text losses, two-phase schedule) -----
    # Test feature of CLIPBaseline / CLIPReID: "before" = concat of the pre-BN [feat, feat_proj] (the
    # reference's TEST.NECK_FEAT), "after" = the post-BNNeck features.
    _C.CLIPREID.NECK_FEAT = "after"
    _C.CLIPREID.PROMPT = CN()
    # Learnable identity-specific tokens per identity (the "X X X X" of the template).
    _C.CLIPREID.PROMPT.N_CTX = 4
    # Class word of "A photo of a X X X X <word>.": "auto" = CLIPREID.PROMPT.CLASS_WORD, which the
    # trainer fills from the training dataset's kind ("person" / "vehicle"; "person" if unknown);
    # any other value is used as the word itself (e.g. "person", "vehicle").
    _C.CLIPREID.PROMPT.TEMPLATE = "auto"
    # Filled from the training dataset when empty (read only when TEMPLATE is "auto").
    _C.CLIPREID.PROMPT.CLASS_WORD = ""
    # Std of the normal init of the identity tokens cls_ctx (0.02 in the reference).
    _C.CLIPREID.PROMPT.CTX_INIT_STD = 0.02
    # Run the causal text transformer only up to the end-of-text token (same numbers, faster).
    _C.CLIPREID.PROMPT.TRUNCATE_AT_EOT = True
    # Registered HEAD_REGISTRY name of the text head (a "text" head: identity labels -> text features).
    _C.CLIPREID.PROMPT.HEAD_NAME = "PromptLearnerHead"
    # CLIP weights file of the text tower. Empty: with a CLIP image backbone, the same CLIP model
    # (MODEL.BACKBONE.PRETRAIN_PATH / CLIP.PRETRAINED_TAG); with any other backbone,
    # CLIP.PRETRAINED_TAG (when MODEL.BACKBONE.PRETRAIN) or random init. Architecture from
    # CLIPREID.BACKBONE.MODEL_NAME (or the file). Not read when MODEL.WEIGHTS holds every tensor.
    _C.CLIPREID.PROMPT.TEXT_WEIGHTS = ""
    # Width of the learned projection CLIPBaseline / CLIPReID put on a backbone without a projected
    # output (or one of another width than the text tower): 0 = the text tower's width (CLIPReID),
    # 512 (CLIPBaseline). CLIPReID needs it equal to the text tower's width.
    _C.CLIPREID.PROJ_DIM = 0
    # Stage-2 image-to-text cross-entropy (logits = projected image feature @ frozen text feats.T).
    _C.CLIPREID.LOSSES = CN()
    _C.CLIPREID.LOSSES.I2T = CN()
    _C.CLIPREID.LOSSES.I2T.EPSILON = 0.1  # label smoothing; 0 = plain cross-entropy
    _C.CLIPREID.LOSSES.I2T.SCALE = 1.0  # loss weight (I2T_LOSS_WEIGHT of the reference)
    # Stage-1 supervised contrastive loss, image->text plus text->image (raw dot products).
    _C.CLIPREID.LOSSES.SUPCON = CN()
    _C.CLIPREID.LOSSES.SUPCON.TEMPERATURE = 1.0
    _C.CLIPREID.LOSSES.SUPCON.SCALE = 1.0
    # Which phases to run: "both", or "stage2" (skip stage 1: needs the text features of a
    # stage-1 checkpoint in MODEL.WEIGHTS). Stage 1 alone: SOLVER.MAX_EPOCHS 0.
    _C.CLIPREID.PHASES = "both"
    # Stage 1: learn cls_ctx on cached image features (own optimizer and cosine schedule).
    _C.CLIPREID.STAGE1 = CN()
    # Registered LOSS_REGISTRY names used in stage 1.
    _C.CLIPREID.STAGE1.LOSS_NAMES = ("ImageTextSupConLoss",)
    _C.CLIPREID.STAGE1.IMS_PER_BATCH = 64  # global batch of cached image features
    _C.CLIPREID.STAGE1.MAX_EPOCHS = 60  # 120 for the person ViT configs
    _C.CLIPREID.STAGE1.OPTIMIZER = "Adam"
    _C.CLIPREID.STAGE1.BASE_LR = 3.5e-4
    _C.CLIPREID.STAGE1.WEIGHT_DECAY = 1e-4  # coupled L2, as torch Adam
    _C.CLIPREID.STAGE1.WARMUP_EPOCHS = 5
    _C.CLIPREID.STAGE1.WARMUP_LR_INIT = 1e-5
    _C.CLIPREID.STAGE1.LR_MIN = 1e-6  # cosine floor (also the LR of the last epoch)
    # Save a checkpoint every N stage-1 epochs (0 = only at the end of stage 1).
    _C.CLIPREID.STAGE1.CHECKPOINT_PERIOD = 0


@register_config_check
def check_clipreid_config(cfg, training: bool) -> None:
    """The plugin's part of the engine's config validation (names and values of its keys).

    Raises:
        ConfigError: naming the key.
    """
    check_test_feature(cfg.CLIPREID.NECK_FEAT)
    _quick_gelu(cfg.CLIPREID.BACKBONE.QUICK_GELU)
    _stride_size(cfg.CLIPREID.BACKBONE.STRIDE_SIZE)
    if not training:
        return
    if cfg.MODEL.META_ARCHITECTURE == "CLIPReID" and "ImageTextCrossEntropyLoss" not in cfg.MODEL.LOSSES.NAMES:
        # Legal (an ablation), but the paper's stage 2 always has L_i2tce: say so rather than train without it.
        logging.getLogger(__name__).warning(
            f"MODEL.LOSSES.NAMES is {list(cfg.MODEL.LOSSES.NAMES)}: CLIPReID's stage 2 will train without the "
            f"image-to-text loss (add ImageTextCrossEntropyLoss unless this is an ablation).")
    stage1_hook = "CLIPReIDStage1Hook" in cfg.TRAINER.HOOKS
    check_phases(cfg, check_epochs=stage1_hook)
    if stage1_hook:
        s1 = cfg.CLIPREID.STAGE1
        if s1.IMS_PER_BATCH < 1:
            raise ConfigError(f"CLIPREID.STAGE1.IMS_PER_BATCH is {s1.IMS_PER_BATCH}; it must be >= 1.")
        if 0 < s1.MAX_EPOCHS <= s1.WARMUP_EPOCHS:
            logging.getLogger(__name__).warning(
                f"CLIPREID.STAGE1.WARMUP_EPOCHS ({s1.WARMUP_EPOCHS}) is not shorter than CLIPREID.STAGE1.MAX_EPOCHS "
                f"({s1.MAX_EPOCHS}): stage 1 trains inside its warmup the whole time.")
