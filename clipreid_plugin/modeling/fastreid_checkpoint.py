"""fast-reid checkpoints (JDAI-CV/fast-reid model zoo, ``{"model": state_dict}``) -> this toolkit's models.

fast-reid names a Baseline's tensors ``backbone.*`` and ``heads.*`` (MGN adds ``b1``, ``b1_head``,
...). The backbones here keep fast-reid's names exactly (:mod:`.backbones.resnet`,
:mod:`.backbones.resnest`); a component whose names differ declares the rewrite as a class
attribute::

    class EmbeddingHead(nn.Module):
        # (fast-reid name, our name), relative to the module; a name ending in "." is a prefix,
        # any other an exact tensor name
        FASTREID_KEY_MAP = (("weight", "classifier.weight"), ("bottleneck.0.", "bn."))

:func:`fastreid_key_rules` collects every sub-module's map under its path, outer modules first, and
:func:`to_model_key` applies them in that order (a meta-architecture may first move a whole
fast-reid sub-tree, e.g. ``b1_head.`` -> ``heads.b1.``, whose own map then applies). It is the one
place that rewrites a fast-reid name; the parity replay (tests/peers) fills its models through it
too. :func:`convert_fastreid_checkpoint` is registered in ``CHECKPOINT_CONVERTERS``, so
``MODEL.WEIGHTS`` takes fast-reid files; one whose backbone is another architecture than the
config builds (IBN, non-local, depth, ResNet vs ResNeSt, SE) fails in one line naming the key to set.
"""

import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from clipreid_plugin.utils.checkpoint import CHECKPOINT_CONVERTERS, CheckpointError

__all__ = ["FASTREID_FORMAT", "fastreid_key_rules", "to_model_key", "is_fastreid_state_dict",
           "backbone_differences", "convert_fastreid_state_dict", "convert_fastreid_checkpoint"]

FASTREID_FORMAT = "fast-reid"

Rules = List[Tuple[str, Sequence[Tuple[str, str]]]]

# fast-reid's heads hold the classifier matrix as their own `weight` and the BNNeck in `bottleneck`:
# no other checkpoint this toolkit reads has tensors named so.
_FASTREID_HEAD = re.compile(r"^(heads|b\d+_head)\.(weight$|bottleneck\.\d+\.)")


def fastreid_key_rules(model: nn.Module) -> Rules:
    """Every ``FASTREID_KEY_MAP`` of ``model`` and its sub-modules, with the module's path.

    Returns:
        ``[(path prefix, ((fast-reid name, our name), ...)), ...]`` in pre-order (parents first);
        the path prefix is "" for the model itself, else ``"<path>."``.
    """
    rules: Rules = []
    for path, module in model.named_modules():
        pairs = getattr(type(module), "FASTREID_KEY_MAP", ())
        if pairs:
            rules.append((f"{path}." if path else "", tuple(pairs)))
    return rules


def to_model_key(rules: Rules, key: str) -> str:
    """The model's name of fast-reid tensor ``key``: each module's first matching pair, outer modules first.

    Args:
        rules: :func:`fastreid_key_rules` of the model.
        key: a fast-reid state-dict name.

    Returns:
        The rewritten name (``key`` itself where no rule matches: the names are the same).
    """
    for path, pairs in rules:
        if not key.startswith(path):
            continue
        rest = key[len(path):]
        for theirs, ours in pairs:
            if rest == theirs or (theirs.endswith(".") and rest.startswith(theirs)):
                key = path + ours + rest[len(theirs):]
                break
    return key


def is_fastreid_state_dict(sd: Dict[str, torch.Tensor]) -> bool:
    """Whether ``sd`` holds a fast-reid head (``heads.weight``, ``heads.bottleneck.N.*``, MGN's ``bN_head.*``)."""
    return any(_FASTREID_HEAD.match(str(k)) for k in sd)


def _stage_blocks(keys) -> Tuple[int, ...]:
    counts = {}
    for k in keys:
        m = re.match(r"backbone\.layer(\d)\.(\d+)\.", k)
        if m:
            counts[int(m.group(1))] = max(counts.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    return tuple(counts.get(i, 0) for i in (1, 2, 3, 4))


def backbone_differences(file_shapes: Dict[str, Tuple[int, ...]], model_shapes: Dict[str, Tuple[int, ...]]
                         ) -> List[str]:
    """What makes a checkpoint's backbone another architecture than the model's, as config advice.

    Args:
        file_shapes / model_shapes: ``{name: shape}`` of the ``backbone.*`` tensors (model names).

    Returns:
        One phrase per difference found ([] when every backbone tensor fits).
    """
    f, m = set(file_shapes), set(model_shapes)
    if f == m and all(tuple(file_shapes[k]) == tuple(model_shapes[k]) for k in f):
        return []
    out = []

    def flag(pattern: str, what: str, key: str) -> None:
        in_file, in_model = any(pattern in k for k in f), any(pattern in k for k in m)
        if in_file != in_model:
            out.append(f"the file {'has' if in_file else 'has no'} {what}: set {key} {in_file}")

    if ("backbone.conv1.0.weight" in f) != ("backbone.conv1.0.weight" in m):
        out.append("the file is a " + ("ResNeSt (deep stem backbone.conv1.0-6): set MODEL.BACKBONE.NAME "
                                       "build_resnest_backbone" if "backbone.conv1.0.weight" in f else
                                       "ResNet (7x7 stem backbone.conv1): set MODEL.BACKBONE.NAME build_resnet_backbone"))
    flag(".bn1.IN.", "IBN-a layers (bn1.IN / bn1.BN)", "MODEL.BACKBONE.WITH_IBN")
    flag("backbone.NL_", "non-local blocks (backbone.NL_*)", "MODEL.BACKBONE.WITH_NL")
    flag(".se.fc.", "squeeze-excitation layers (se.fc)", "MODEL.BACKBONE.WITH_SE")
    nl = [k for k in f & m if k.startswith("backbone.NL_") and k.endswith(".g.weight")]
    if nl and file_shapes[nl[0]][0] != model_shapes[nl[0]][0]:
        out.append(f"its non-local blocks have {file_shapes[nl[0]][0]} intermediate channel(s), the model's "
                   f"{model_shapes[nl[0]][0]}: set MODEL.BACKBONE.NL_HALF_CHANNELS {file_shapes[nl[0]][0] != 1}")
    fb, mb = _stage_blocks(f), _stage_blocks(m)
    if fb != mb:
        out.append(f"its stages have {fb} blocks, the model's {mb}: set MODEL.BACKBONE.DEPTH to the file's")
    elif not out:
        wrong = [k for k in sorted(f & m) if tuple(file_shapes[k]) != tuple(model_shapes[k])]
        bottleneck = "backbone.layer1.0.conv3.weight"
        if (bottleneck in f) != (bottleneck in m):
            out.append(f"its blocks are {'bottleneck' if bottleneck in f else 'basic'} blocks, the model's "
                       f"{'bottleneck' if bottleneck in m else 'basic'} (bottleneck vs basic blocks: ResNet-50 and "
                       f"deeper vs 18 / 34): set MODEL.BACKBONE.DEPTH")
        elif wrong:
            out.append(f"its block widths differ ({wrong[0]}: {tuple(file_shapes[wrong[0]])} in the file vs "
                       f"{tuple(model_shapes[wrong[0]])}): set MODEL.BACKBONE.DEPTH (ResNet vs ResNeXt?)")
        else:
            extra, missing = sorted(f - m), sorted(m - f)
            out.append(f"its tensors differ ({len(missing)} missing, e.g. {missing[:2]}; {len(extra)} unexpected, "
                       f"e.g. {extra[:2]})")
    return out


def convert_fastreid_state_dict(sd: Dict[str, torch.Tensor], model: nn.Module
                                ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a fast-reid state dict to ``model``'s names and check that its backbone is the model's.

    Args:
        sd: the fast-reid state dict (``module.`` already stripped).
        model: the model to load into.

    Returns:
        (new_sd, unmatched): every tensor under the model's name, and the fast-reid keys with no
        counterpart in the model (e.g. ``pixel_mean`` / ``pixel_std`` of older fast-reid versions).

    Raises:
        CheckpointError: the file's backbone is another architecture (one line naming the keys to set).
    """
    rules = fastreid_key_rules(model)
    new_sd = {to_model_key(rules, k): v for k, v in sd.items()}
    own = model.state_dict()
    unmatched = [k for k in sd if to_model_key(rules, k) not in own]
    diffs = backbone_differences({k: tuple(v.shape) for k, v in new_sd.items() if k.startswith("backbone.")},
                                 {k: tuple(v.shape) for k, v in own.items() if k.startswith("backbone.")})
    if diffs:
        raise CheckpointError(f"The checkpoint's backbone (fast-reid names) is another architecture than the config "
                              f"builds: {'; '.join(diffs)}.")
    return new_sd, unmatched


@CHECKPOINT_CONVERTERS.register()
def convert_fastreid_checkpoint(sd: Dict[str, torch.Tensor], model: nn.Module) -> Optional[tuple]:
    """Checkpoint converter: a fast-reid state dict (see :func:`is_fastreid_state_dict`).

    Returns:
        None when ``sd`` is not fast-reid's, or when its names need no rewrite for ``model`` (it
        loads as is); else (converted state dict, "fast-reid", unmatched fast-reid keys).
    """
    if not is_fastreid_state_dict(sd):
        return None
    new_sd, unmatched = convert_fastreid_state_dict(sd, model)
    if list(new_sd) == list(sd):
        return None
    return new_sd, FASTREID_FORMAT, unmatched
