"""Configs stored by earlier versions of the toolkit, read with today's keys.

A checkpoint stores its run's resolved config, so ``--eval-only``, extraction, search and export
work from the ``.pth`` alone. Keys that later moved or changed meaning are rewritten here, once, so
that a checkpoint trained before the change keeps working:

* the CLIP-ReID plugin's keys moved into its own group (``MODEL.BACKBONE.CLIP`` ->
  ``CLIPREID.BACKBONE``, ``MODEL.PROMPT`` -> ``CLIPREID.PROMPT``, ``MODEL.HEADS.PROJ_DIM`` ->
  ``CLIPREID.PROJ_DIM``, ``MODEL.LOSSES.{I2T,SUPCON}`` -> ``CLIPREID.LOSSES.*``);
* ``MODEL.HEADS.NECK_FEAT`` chose the evaluation feature; it now has fast-reid's meaning (the
  triplet loss's feature) and the evaluation feature is ``MODEL.HEADS.EVAL_FEAT`` (the CLIP-ReID
  meta-architectures': ``CLIPREID.NECK_FEAT``). Such a config's triplet feature was the pre-BN one.
"""

from typing import Any, Dict, List, Tuple

__all__ = ["MOVED_KEYS", "upgrade_stored_config"]

# old group or key -> its place today (moved whole, values unchanged)
MOVED_KEYS = (
    ("MODEL.BACKBONE.CLIP", "CLIPREID.BACKBONE"),
    ("MODEL.PROMPT", "CLIPREID.PROMPT"),
    ("MODEL.HEADS.PROJ_DIM", "CLIPREID.PROJ_DIM"),
    ("MODEL.LOSSES.I2T", "CLIPREID.LOSSES.I2T"),
    ("MODEL.LOSSES.SUPCON", "CLIPREID.LOSSES.SUPCON"),
)
_CLIP_META_ARCHS = ("CLIPBaseline", "CLIPReID")


def _pop(tree: Dict[str, Any], key: str) -> Tuple[bool, Any]:
    *path, leaf = key.split(".")
    node = tree
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return False, None
    if leaf not in node:
        return False, None
    return True, node.pop(leaf)


def _put(tree: Dict[str, Any], key: str, value: Any) -> None:
    *path, leaf = key.split(".")
    node = tree
    for part in path:
        node = node.setdefault(part, {})
    node[leaf] = value


def upgrade_stored_config(data: Dict[str, Any]) -> List[str]:
    """Rewrite, in place, the keys of a stored config (a nested dict read from YAML) that moved or
    changed meaning since it was written.

    Args:
        data: the config as read from a checkpoint.

    Returns:
        One note per rewrite (empty for a config of today's layout).
    """
    notes = []
    for old, new in MOVED_KEYS:
        found, value = _pop(data, old)
        if found:
            _put(data, new, value)
            notes.append(f"{old} -> {new}")
    heads = data.get("MODEL", {}).get("HEADS", {})
    if "NECK_FEAT" in heads and "EVAL_FEAT" not in heads:
        clip = data.get("MODEL", {}).get("META_ARCHITECTURE") in _CLIP_META_ARCHS
        target = "CLIPREID.NECK_FEAT" if clip else "MODEL.HEADS.EVAL_FEAT"
        _put(data, target, heads.pop("NECK_FEAT"))
        if not clip:
            heads["NECK_FEAT"] = "before"
        notes.append(f"MODEL.HEADS.NECK_FEAT (the evaluation feature then) -> {target}")
    return notes
