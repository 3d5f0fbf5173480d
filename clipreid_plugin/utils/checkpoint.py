"""Checkpoints: atomic saves, exact resume, and readable reports when weights do not fit.

fvcore's Checkpointer writes in place (a crash mid-save destroys ``model_final.pth``) and
loads with ``weights_only=True`` defaults that reject its own extra data (PITFALLS 9). This
module keeps the same idea (model + "checkpointables" + a ``last_checkpoint`` pointer) with:

* saves that go through a temporary file and ``os.replace``;
* a checkpoint holding only tensors and plain Python values, so it loads with
  ``weights_only=True``;
* ``load_model_weights`` that accepts this project's files, plain state dicts, and any foreign
  format a plugin teaches it (:data:`CHECKPOINT_CONVERTERS`: the CLIP-ReID plugin adds the
  reference implementation's files), and reports missing / unexpected / mis-shaped keys in a
  table.
"""

import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
from tabulate import tabulate
from torch import nn

from clipreid_plugin.utils import comm
from clipreid_plugin.utils.errors import ToolkitError
from clipreid_plugin.utils.file_io import atomic_write, atomic_write_text
from clipreid_plugin.utils.registry import Registry

__all__ = ["Checkpointer", "CheckpointError", "CHECKPOINT_CONVERTERS", "load_model_weights", "unwrap_model",
           "strip_module_prefix"]

logger = logging.getLogger(__name__)

CHECKPOINT_CONVERTERS = Registry("CHECKPOINT_CONVERTER")
CHECKPOINT_CONVERTERS.__doc__ = """
Converters of foreign checkpoint formats, tried in registration order on state dicts that are
not this toolkit's own. A converter is a function ``(state_dict, model) -> None | (converted
state dict, format name, unmatched keys)``: None when the file is not its format.
"""


class CheckpointError(ToolkitError, RuntimeError):
    """A checkpoint file is missing, unreadable, or does not fit the model."""


def strip_module_prefix(sd: Dict[str, Any]) -> Dict[str, Any]:
    """Returns: ``sd`` with the ``module.`` prefix of (Distributed)DataParallel removed from every key."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def unwrap_model(model: nn.Module) -> nn.Module:
    """Returns: the module inside DistributedDataParallel / DataParallel wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _read_file(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, foreign pickle, ...
        raise CheckpointError(
            f"Could not read checkpoint {path}: {type(e).__name__}: {e}. The file may be truncated or "
            f"not a PyTorch checkpoint."
        ) from e


def _extract_state_dict(data: Dict[str, Any], model: nn.Module) -> Tuple[Dict[str, torch.Tensor], str]:
    """Return the model state dict held by ``data`` and a word describing its format."""
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        sd = data["model"]
        fmt = "clipreid_plugin"
    elif isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        sd, fmt = data["state_dict"], "state_dict"
    elif isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        sd, fmt = data, "plain"
    else:
        raise CheckpointError("Unrecognised checkpoint content: expected a state dict or {'model': ...}.")
    sd = strip_module_prefix(sd)
    if fmt != "clipreid_plugin":
        for _, convert in CHECKPOINT_CONVERTERS:  # registration order
            converted = convert(sd, model)
            if converted is not None:
                sd, fmt, unmatched = converted
                if unmatched:
                    logger.warning(f"{fmt} checkpoint keys with no counterpart in this model: " + ", ".join(unmatched))
                break
    return sd, fmt


def load_model_weights(model: nn.Module, path: str, strict_shapes: bool = False) -> Dict[str, List[str]]:
    """Load model weights from ``path`` and report what did not fit.

    Accepts this project's checkpoints (``{"model": ...}``), plain state dicts, and the foreign
    formats of :data:`CHECKPOINT_CONVERTERS`. A ``module.`` prefix is stripped.

    Args:
        model: the model (DDP wrappers are unwrapped).
        path: checkpoint file.
        strict_shapes: raise instead of skipping parameters whose shapes differ.

    Returns:
        ``{"missing": [...], "unexpected": [...], "mismatched": ["key: file shape vs model shape"]}``.

    Raises:
        CheckpointError: unreadable file, or no key of the file fits the model (a checkpoint of a
            different architecture).
    """
    model = unwrap_model(model)
    data = _read_file(path)
    sd, fmt = _extract_state_dict(data, model)
    own = model.state_dict()
    mismatched, loadable = [], {}
    for k, v in sd.items():
        if k in own:
            if own[k].shape != v.shape:
                mismatched.append(f"{k}: {tuple(v.shape)} in file vs {tuple(own[k].shape)} in model")
            else:
                loadable[k] = v
    if own and not loadable:
        raise CheckpointError(
            f"No parameter of {path} fits {type(model).__name__}: it was saved from a different "
            f"architecture ({len(sd)} keys in the file, e.g. {list(sd)[:3]}; model keys e.g. "
            f"{list(own)[:3]}). Check MODEL.META_ARCHITECTURE / MODEL.BACKBONE.* against the checkpoint."
        )
    if mismatched and strict_shapes:
        raise CheckpointError(f"Shape mismatch loading {path}:\n  " + "\n  ".join(mismatched))
    result = model.load_state_dict(loadable, strict=False)
    report = {"missing": [k for k in result.missing_keys if k not in {m.split(':')[0] for m in mismatched}],
              "unexpected": [k for k in sd if k not in own], "mismatched": mismatched}
    rows = [(kind, k) for kind in ("missing", "unexpected", "mismatched") for k in report[kind]]
    msg = f"Loaded {len(loadable)}/{len(own)} tensors from {path} ({fmt} format)."
    if rows:
        logger.warning(msg + " Keys that did not load:\n" + tabulate(rows, headers=["problem", "key"]))
    else:
        logger.info(msg)
    return report


class Checkpointer:
    """Save and restore a model plus "checkpointables" (optimizer, scheduler, trainer, ...).

    Args:
        model: the model (DDP wrappers are unwrapped).
        save_dir: output folder; only the main process writes.
        **checkpointables: objects with ``state_dict``/``load_state_dict`` stored beside the model.
    """

    def __init__(self, model: nn.Module, save_dir: str, **checkpointables: Any):
        self.model = unwrap_model(model)
        self.save_dir = save_dir
        self.checkpointables = checkpointables

    def save(self, name: str, **extra: Any) -> Optional[str]:
        """Atomically write ``save_dir/name.pth`` and point ``last_checkpoint`` at it.

        Args:
            name: file name without extension (``model_0010``, ``model_final``).
            **extra: additional plain values to store (must load with ``weights_only=True``).

        Returns:
            The path written (None on non-main processes).
        """
        if not comm.is_main_process():
            return None
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(extra)
        path = os.path.join(self.save_dir, f"{name}.pth")
        atomic_write(path, lambda f: torch.save(data, f))
        # the pointer is written only after the checkpoint itself is complete
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), os.path.basename(path))
        logger.info(f"Saved checkpoint to {path}")
        return path

    def get_checkpoint_file(self) -> Optional[str]:
        """Returns: the path named by ``save_dir/last_checkpoint``, or None if there is none."""
        pointer = os.path.join(self.save_dir, "last_checkpoint")
        if not os.path.isfile(pointer):
            return None
        with open(pointer) as f:
            name = f.read().strip()
        path = os.path.join(self.save_dir, name)
        return path if os.path.isfile(path) else None

    def has_checkpoint(self) -> bool:
        """Returns: whether ``save_dir`` holds a checkpoint to resume from."""
        return self.get_checkpoint_file() is not None

    def resume(self) -> Dict[str, Any]:
        """Load the last checkpoint of ``save_dir`` (model and every checkpointable).

        Returns:
            The remaining (extra) content of the checkpoint; {} when there is none.
        """
        path = self.get_checkpoint_file()
        if path is None:
            return {}
        data = _read_file(path)
        self.model.load_state_dict(data.pop("model"), strict=True)
        for key, obj in self.checkpointables.items():
            if key in data:
                obj.load_state_dict(data.pop(key))
            else:
                logger.warning(f"Checkpoint {path} has no state for {key!r}; it starts fresh.")
        logger.info(f"Resumed from {path}")
        return data
