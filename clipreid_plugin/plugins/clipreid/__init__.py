"""The CLIP-ReID plugin (Li, Sun, Li, AAAI 2023): CLIP for image re-identification.

Importing this package registers, through the toolkit's public seams only:

* config keys (``CLIPREID.BACKBONE.*``, ``CLIPREID.PROMPT.*``, ``MODEL.LOSSES.{I2T,SUPCON}``,
  ``CLIPREID.PROJ_DIM``, ``CLIPREID.*``) and the data-dependent ones among them;
* backbone ``build_clip_backbone``: an open_clip image tower adapted for ReID;
* head ``PromptLearnerHead``: identity prompts and the frozen CLIP text tower (a "text" head);
* losses ``ImageTextSupConLoss`` (stage 1) and ``ImageTextCrossEntropyLoss`` (stage 2);
* meta-architectures ``CLIPBaseline`` and ``CLIPReID``;
* hook ``CLIPReIDStage1Hook``: the prompt-learning phase;
* a checkpoint converter for the reference implementation's files.

It is loaded through the ``clipreid_plugin.plugins`` entry point (declared in setup.py) and is
also named in ``PLUGINS`` of the project configs.
"""

from . import config  # noqa: F401  (config keys first: the components read them)
from .backbone import CLIPImageEncoder, build_clip_backbone, load_clip_from_config, shared_clip_models
from .clip_baseline import CLIPBaseline
from .clip_weights import convert_openai_checkpoint, load_clip, read_clip_checkpoint
from .clipreid import CLIPReID
from .losses import ImageTextCrossEntropyLoss, ImageTextSupConLoss, supcon_loss
from .prompt_learner import PromptLearnerHead
from .reference_checkpoint import convert_reference_state_dict, is_reference_state_dict
from .stage1 import CLIPReIDStage1Hook, PromptLearningModel

__all__ = ["CLIPImageEncoder", "build_clip_backbone", "load_clip_from_config", "shared_clip_models", "CLIPBaseline",
           "CLIPReID", "convert_openai_checkpoint", "load_clip", "read_clip_checkpoint", "ImageTextCrossEntropyLoss",
           "ImageTextSupConLoss", "supcon_loss", "PromptLearnerHead", "convert_reference_state_dict",
           "is_reference_state_dict", "CLIPReIDStage1Hook", "PromptLearningModel"]
