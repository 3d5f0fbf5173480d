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
import re
from typing import Any, Dict, List, Optional, Tuple

import torch
from tabulate import tabulate
from torch import nn

from clipreid_plugin.utils import comm
from clipreid_plugin.utils.errors import OutputWriteError, ToolkitError
from clipreid_plugin.utils.file_io import atomic_write, atomic_write_text
from clipreid_plugin.utils.registry import Registry

__all__ = ["Checkpointer", "CheckpointError", "CHECKPOINT_CONVERTERS", "load_model_weights", "unwrap_model",
           "strip_module_prefix", "read_checkpoint_metadata", "read_state_dict", "checkpoint_family", "summarise_keys"]

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
    """Returns: the module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def _read_file(path: str, mmap: bool = False) -> Dict[str, Any]:
    """``torch.load`` of a checkpoint on the CPU, or a :class:`CheckpointError` naming the file.

    With ``mmap`` the tensors' storage stays on disk until used: reading a large checkpoint's
    stored config or tensor shapes then costs no full read of its weights. Files of the legacy
    (non-zip) format cannot be mapped and are read whole.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # truncated file, foreign pickle, ...
        if mmap:
            return _read_file(path)
        raise CheckpointError(
            f"Could not read checkpoint {path}: {type(e).__name__}: {e}. The file may be truncated or "
            f"not a PyTorch checkpoint."
        ) from e


def _unwrap_state_dict(data: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], str]:
    """Return the state dict held by a loaded checkpoint (``module.`` prefixes stripped) and a
    word describing its layout: ``clipreid_plugin`` (``{"model": ...}``), ``state_dict`` or
    ``plain``."""
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        sd = data["model"]
        fmt = "clipreid_plugin"
    elif isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        sd, fmt = data["state_dict"], "state_dict"
    elif isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        sd, fmt = data, "plain"
    else:
        raise CheckpointError("Unrecognised checkpoint content: expected a state dict or {'model': ...}.")
    return strip_module_prefix(sd), fmt


def read_state_dict(path: str, mmap: bool = False) -> Dict[str, torch.Tensor]:
    """The state dict a checkpoint file holds, as saved (no foreign-format conversion).

    Args:
        path: a checkpoint: this toolkit's, ``{"state_dict": ...}`` or a plain state dict.
        mmap: leave the tensors' storage on disk until used (enough to read shapes).

    Returns:
        ``{name: tensor}`` with ``module.`` prefixes stripped.

    Raises:
        CheckpointError: the file is missing, unreadable, or holds no state dict.
    """
    return _unwrap_state_dict(_read_file(path, mmap=mmap))[0]


def _extract_state_dict(data: Dict[str, Any], model: nn.Module) -> Tuple[Dict[str, torch.Tensor], str]:
    """Return the model state dict held by ``data`` (converted by :data:`CHECKPOINT_CONVERTERS`
    when it has a foreign format) and a word describing its format."""
    sd, fmt = _unwrap_state_dict(data)
    # Every layout is offered to the converters: foreign toolkits save {"model": ...} too (fast-reid);
    # each converter recognises its own names and answers None for this toolkit's.
    for _, convert in CHECKPOINT_CONVERTERS:  # registration order
        converted = convert(sd, model)
        if converted is not None:
            sd, fmt, unmatched = converted
            if unmatched:
                logger.warning(f"{fmt} checkpoint keys with no counterpart in this model: " + ", ".join(unmatched))
            break
    return sd, fmt


def summarise_keys(keys: List[str], modules: int = 3, examples: int = 2) -> str:
    """A short account of many state-dict keys: their count, and per module (the first two
    name parts, ``backbone.layer4``) how many and the first few.

    Example: ``"48 keys in 2 modules: backbone.layer3 (36: 2.conv1.weight, 2.bn1.weight, ...);
    backbone.layer4 (12: ...)"``. A key may carry a note after ``": "`` (a shape mismatch).
    """
    groups: Dict[str, List[str]] = {}
    for key in keys:
        parts = key.split(": ", 1)[0].split(".")
        module = ".".join(parts[:2]) if len(parts) > 2 else parts[0]
        groups.setdefault(module, []).append(key[len(module) + 1:] if key.startswith(module + ".") else key)
    shown = []
    for module, names in list(groups.items())[:modules]:
        shown.append(f"{module} ({len(names)}: {', '.join(names[:examples])}{', ...' if len(names) > examples else ''})")
    rest = len(groups) - len(shown)
    return (f"{len(keys)} key{'s' if len(keys) != 1 else ''} in {len(groups)} module{'s' if len(groups) != 1 else ''}: "
            + "; ".join(shown) + (f"; and {rest} more module{'s' if rest != 1 else ''}" if rest else ""))


def _format_problems(report: Dict[str, List[str]]) -> str:
    return "; ".join(f"{kind} {summarise_keys(report[kind])}" for kind in ("missing", "mismatched", "unexpected")
                     if report[kind])


def _key_report(model_sd: Dict[str, torch.Tensor], file_sd: Dict[str, torch.Tensor]) -> Dict[str, List[str]]:
    """Returns: ``{"missing", "unexpected", "mismatched"}`` keys of ``file_sd`` against the model's."""
    return {"missing": [k for k in model_sd if k not in file_sd],
            "unexpected": [k for k in file_sd if k not in model_sd],
            "mismatched": [f"{k}: {tuple(v.shape)} in file vs {tuple(model_sd[k].shape)} in model"
                           for k, v in file_sd.items() if k in model_sd and model_sd[k].shape != v.shape]}


def load_model_weights(model: nn.Module, path: str, strict_shapes: bool = False,
                       allow_partial: bool = True) -> Dict[str, List[str]]:
    """Load model weights from ``path`` and report what did not fit.

    Accepts this project's checkpoints (``{"model": ...}``), plain state dicts, and the foreign
    formats of :data:`CHECKPOINT_CONVERTERS`. A ``module.`` prefix is stripped.

    Args:
        model: the model (DDP wrappers are unwrapped).
        path: checkpoint file.
        strict_shapes: raise instead of skipping parameters whose shapes differ.
        allow_partial: load what fits when the file fills only part of the model (model tensors
            missing from the file or of another shape keep their initialisation); False makes
            that an error (``MODEL.ALLOW_PARTIAL_WEIGHTS`` decides for ``MODEL.WEIGHTS``). Keys of
            the file the model does not have are only reported.

    Returns:
        ``{"missing": [...], "unexpected": [...], "mismatched": ["key: file shape vs model shape"]}``.

    Raises:
        CheckpointError: unreadable file, no key of the file fits the model (a checkpoint of a
            different architecture), or a partial fill without ``allow_partial``.
    """
    model = unwrap_model(model)
    data = _read_file(path)
    sd, fmt = _extract_state_dict(data, model)
    own = model.state_dict()
    report = _key_report(own, sd)
    loadable = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if own and not loadable:
        raise CheckpointError(
            f"No parameter of {path} fits {type(model).__name__}: it was saved from a different "
            f"architecture ({len(sd)} keys in the file, e.g. {list(sd)[:3]}; model keys e.g. "
            f"{list(own)[:3]}). Check MODEL.META_ARCHITECTURE / MODEL.BACKBONE.* against the checkpoint."
        )
    if report["mismatched"] and strict_shapes:
        raise CheckpointError(f"Shape mismatch loading {path}: {summarise_keys(report['mismatched'])}.")
    if not allow_partial and (report["missing"] or report["mismatched"]):
        raise CheckpointError(
            f"{path} fills only {len(loadable)} of the {len(own)} tensors of {type(model).__name__} "
            f"({_format_problems(report)}). The config does not describe the model this checkpoint was saved "
            f"from (compare MODEL.* with the run's config.yaml); set MODEL.ALLOW_PARTIAL_WEIGHTS True to load "
            f"what fits and keep the initialisation of the rest.")
    model.load_state_dict(loadable, strict=False)
    rows = [(kind, k) for kind in ("missing", "unexpected", "mismatched") for k in report[kind]]
    msg = f"Loaded {len(loadable)}/{len(own)} tensors from {path} ({fmt} format)."
    if rows:
        logger.warning(msg + " Keys that did not load:\n" + tabulate(rows, headers=["problem", "key"]))
    else:
        logger.info(msg)
    return report


def read_checkpoint_metadata(path: str) -> Dict[str, Any]:
    """The metadata a :class:`Checkpointer` stored with the weights (empty for other files).

    Args:
        path: a checkpoint file.

    Returns:
        ``{"config": YAML text of the run's resolved config, "model_info": {...}}`` (each key
        only when stored).
    """
    data = _read_file(path, mmap=True)  # the metadata only: the weights stay on disk
    meta = data.get("metadata") if isinstance(data, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


# Progress order of the checkpoint names a run writes: stage-1 periodic, stage-1 final,
# periodic, final (a phase hook's files come before the main loop's).
_PERIODIC = re.compile(r"^model_(\d+)\.pth$")
# a phase's checkpoints: model_<phase>_<NNNN|final>.pth, any phase name (PhaseHook.phase_name: letters,
# digits, "_" and "-", e.g. "stage1", "head_warmup")
_PHASE = re.compile(r"^model_([A-Za-z0-9_-]+?)_(\d+|final)\.pth$")


def _progress_key(name: str) -> Optional[Tuple[int, int, int]]:
    if name == "model_final.pth":
        return (2, 0, 0)
    m = _PERIODIC.match(name)
    if m:
        return (1, 0, int(m.group(1)))
    m = _PHASE.match(name)
    if m:
        step = m.group(2)
        return (0, 1, 0) if step == "final" else (0, 0, int(step))
    return None


def checkpoint_family(name: str) -> Optional[str]:
    """Returns: the family of a periodic checkpoint name ("model" for ``model_0004.pth``,
    "model_stage1" for ``model_stage1_0004.pth``), None for final and other files."""
    if _PERIODIC.match(name):
        return "model"
    m = _PHASE.match(name)
    if m and m.group(2) != "final":
        return f"model_{m.group(1)}"
    return None


class Checkpointer:
    """Save and restore a model plus "checkpointables" (optimizer, scheduler, trainer, ...).

    Saves are atomic and update a ``last_checkpoint`` pointer afterwards. :meth:`resume` uses
    the pointer's file, or, when the pointer is missing, dangling or names a file that cannot
    be read, the newest readable checkpoint of the folder (and says which). Periodic
    checkpoints of each family (``model_NNNN``, ``model_stage1_NNNN``) beyond the newest
    ``max_keep`` are deleted after each save; final ones are never deleted.

    Args:
        model: the model (DDP wrappers are unwrapped).
        save_dir: output folder; only the main process writes.
        max_keep: periodic checkpoints kept per family (0 = all).
        **checkpointables: objects with ``state_dict``/``load_state_dict`` stored beside the model.

    Attributes:
        metadata: plain values stored in every checkpoint under ``"metadata"`` (the run's
            resolved config, what the model is), so that a checkpoint is usable on its own.
    """

    def __init__(self, model: nn.Module, save_dir: str, max_keep: int = 0, **checkpointables: Any):
        self.model = unwrap_model(model)
        self.save_dir = save_dir
        self.max_keep = int(max_keep)
        self.checkpointables = checkpointables
        self.metadata: Dict[str, Any] = {}

    def save(self, name: str, **extra: Any) -> Optional[str]:
        """Atomically write ``save_dir/name.pth`` and point ``last_checkpoint`` at it.

        Args:
            name: file name without extension (``model_0010``, ``model_final``).
            **extra: additional plain values to store (must load with ``weights_only=True``).

        Returns:
            The path written (None on non-main processes).

        Raises:
            CheckpointError: the file could not be written (disk full, permissions); the
                previous checkpoints are intact.
        """
        if not comm.is_main_process():
            return None
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        if self.metadata:
            data["metadata"] = dict(self.metadata)
        data.update(extra)
        path = os.path.join(self.save_dir, f"{name}.pth")
        try:
            atomic_write(path, lambda f: torch.save(data, f))
        except OutputWriteError as e:
            raise CheckpointError(f"Could not write checkpoint {path}: {e.cause}. The previous checkpoints in "
                                  f"{self.save_dir} are intact; free disk space (or fix permissions) and resume "
                                  f"with --resume.") from None
        try:  # the pointer is written only after the checkpoint itself is complete
            atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), os.path.basename(path))
        except OutputWriteError as e:
            raise CheckpointError(f"Wrote checkpoint {path}, but not its pointer last_checkpoint: {e.cause}. Free "
                                  f"disk space (or fix permissions) and resume with --resume: it finds "
                                  f"{os.path.basename(path)} without the pointer.") from None
        logger.info(f"Saved checkpoint to {path}")
        self.prune(os.path.basename(path))
        return path

    def prune(self, keep_name: str = "") -> List[str]:
        """Delete periodic checkpoints beyond the newest ``max_keep`` of each family.

        Args:
            keep_name: a file never deleted (the one just written).

        Returns:
            The deleted paths.
        """
        if self.max_keep <= 0 or not os.path.isdir(self.save_dir):
            return []
        families: Dict[str, List[str]] = {}
        for name in os.listdir(self.save_dir):
            family = checkpoint_family(name)
            if family:
                families.setdefault(family, []).append(name)
        pointer = self._pointer_name()
        removed = []
        for names in families.values():
            names.sort(key=_progress_key, reverse=True)
            for name in names[self.max_keep:]:
                if name not in (keep_name, pointer):
                    path = os.path.join(self.save_dir, name)
                    os.remove(path)
                    removed.append(path)
        return removed

    def _pointer_name(self) -> Optional[str]:
        pointer = os.path.join(self.save_dir, "last_checkpoint")
        if not os.path.isfile(pointer):
            return None
        with open(pointer) as f:
            return f.read().strip() or None

    def checkpoints(self) -> List[str]:
        """Returns: the run's checkpoint files in ``save_dir``, newest (most progress) first."""
        if not os.path.isdir(self.save_dir):
            return []
        names = [n for n in os.listdir(self.save_dir) if _progress_key(n) is not None]
        return [os.path.join(self.save_dir, n) for n in sorted(names, key=_progress_key, reverse=True)]

    def get_checkpoint_file(self) -> Optional[str]:
        """Returns: the path named by ``save_dir/last_checkpoint`` if that file exists, else None."""
        name = self._pointer_name()
        path = os.path.join(self.save_dir, name) if name else None
        return path if path and os.path.isfile(path) else None

    def has_checkpoint(self) -> bool:
        """Returns: whether ``save_dir`` holds a checkpoint to resume from."""
        return self.get_checkpoint_file() is not None or bool(self.checkpoints())

    def _resume_candidates(self) -> List[str]:
        pointed = self.get_checkpoint_file()
        rest = [p for p in self.checkpoints() if p != pointed]
        return ([pointed] if pointed else []) + rest

    def resume(self) -> Dict[str, Any]:
        """Load the last good checkpoint of ``save_dir`` (model and every checkpointable).

        Returns:
            The remaining (extra) content of the checkpoint plus ``"path"``; {} when there is none.

        Raises:
            CheckpointError: checkpoints exist but none can be read, or the model does not fit
                the checkpoint (a different architecture than the run's).
        """
        candidates = self._resume_candidates()
        if not candidates:
            return {}
        pointer = self._pointer_name()
        errors = []
        for path in candidates:
            try:
                data = _read_file(path)
            except CheckpointError as e:
                logger.warning(f"Skipping unreadable checkpoint {path}: {e}")
                errors.append(f"{os.path.basename(path)}: {e}")
                continue
            break
        else:
            raise CheckpointError(f"No checkpoint in {self.save_dir} can be read ({'; '.join(errors)}). Delete the "
                                  f"folder's model_*.pth files to start over, or give another OUTPUT_DIR.")
        name = os.path.basename(path)
        if name != pointer:
            why = "is missing" if pointer is None else (
                f"names {pointer}, which " + ("cannot be read" if os.path.isfile(os.path.join(self.save_dir, pointer))
                                              else "does not exist"))
            logger.warning(f"last_checkpoint {why}: resuming from the newest readable checkpoint, {name}.")
        weights = data.pop("model")
        report = _key_report(self.model.state_dict(), weights)
        if any(report.values()):
            raise CheckpointError(
                f"Cannot resume from {path}: it was saved from a different model than this config builds "
                f"({_format_problems(report)}). Resume with the run's own config "
                f"(--config-file {os.path.join(self.save_dir, 'config.yaml')}) or use another OUTPUT_DIR.")
        self.model.load_state_dict(weights, strict=True)
        for key, obj in self.checkpointables.items():
            if key in data:
                obj.load_state_dict(data.pop(key))
            else:
                logger.warning(f"Checkpoint {path} has no state for {key!r}; it starts fresh.")
        data.pop("metadata", None)
        logger.info(f"Resumed from {path}")
        return dict(data, path=path)
