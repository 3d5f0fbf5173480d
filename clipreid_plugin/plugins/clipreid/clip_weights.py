"""Build an fp32 open_clip ``CLIP`` model from any of the weight sources the toolkit accepts.

Four sources, one entry point (:func:`load_clip`):

(a) a local **OpenAI release file** (``~/.cache/clip/ViT-B-16.pt``: a TorchScript archive) or
    the same weights as a plain state dict. Like OpenAI's ``build_model``, the architecture
    is read from the tensor shapes, so any OpenAI-format file works (including the tiny test
    weights), and QuickGELU is always used (OpenAI trained with it);
(b) an **open_clip checkpoint file** for ``model_name`` (a plain or ``{"state_dict": ...}``
    file, ``.safetensors`` too); the activation is the one of the model config
    (``ViT-B-16`` = GELU, ``ViT-B-16-quickgelu`` = QuickGELU);
(c) an **open_clip pretrained tag** (``"openai"``, ``"laion2b_s34b_b88k"``...): needs the
    network or a filled open_clip/Hugging Face cache; QuickGELU as the tag was trained;
(d) **random init** of ``model_name`` (used before loading a full CLIP-ReID checkpoint with
    MODEL.WEIGHTS); QuickGELU, because CLIP-ReID checkpoints are OpenAI-architecture models.

Why not simply ``open_clip.create_model(name, pretrained=path)``: it reads files with
``weights_only=True``, which fails on TorchScript archives; ``build_model_from_openai_state_dict``
returns an fp16 model with ``LayerNormFp32`` and rounds the fp32 tensors of the file to fp16 on
the way; and the plain ``ViT-B-16``/``RN50`` configs silently use ``nn.GELU`` with OpenAI
weights (PITFALLS 1, 6, 7). Every model returned here is float32, on the CPU, in eval mode
(as OpenAI's ``build_model`` and the reference leave the CLIP sub-modules).
"""

import difflib
import logging
import os
import warnings
import zipfile
from typing import Dict, Optional, Tuple

import open_clip
import torch
from open_clip import tokenizer as clip_tokenizer
from open_clip.convert import convert_state_dict
from open_clip.model import CLIP, convert_to_custom_text_state_dict

from clipreid_plugin.utils.checkpoint import CheckpointError, read_state_dict
from clipreid_plugin.utils.errors import ConfigError
from clipreid_plugin.utils.file_io import atomic_write

__all__ = [
    "load_clip",
    "read_clip_checkpoint",
    "is_openai_state_dict",
    "infer_openai_model_config",
    "convert_openai_checkpoint",
    "infer_model_config_from_reid_checkpoint",
]

logger = logging.getLogger(__name__)

# Tiny CLIP architectures shipped with the plugin (random init, no download): the demo and
# the tests build CLIP-ReID with them. open_clip looks names up in its registry of JSON configs.
MODEL_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_configs")


def register_toolkit_model_configs() -> None:
    """Add this plugin's ``model_configs/*.json`` (``ReID-Tiny-RN``, ``ReID-Tiny-ViT-16``) to open_clip."""
    if open_clip.get_model_config("ReID-Tiny-RN") is None:
        open_clip.add_model_config(MODEL_CONFIG_DIR)

# Keys of a TorchScript archive's state dict that are not tensors of the model.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------
def _is_torchscript_archive(path: str) -> bool:
    """TorchScript zips hold ``<root>/constants.pkl`` and ``<root>/code/``; torch.save zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def read_clip_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], bool]:
    """Read a CLIP weights file into a plain state dict, whatever its container.

    TorchScript archives (OpenAI's release files) are opened with ``torch.jit.load`` once and
    reduced to their tensors; everything else is read with ``weights_only=True``. A
    ``{"state_dict": ...}`` wrapper (open_clip training checkpoints) and a ``module.`` prefix
    (DDP) are removed. Tensors keep their stored dtype (OpenAI files are partly fp16).

    Args:
        path: local file (``.pt``, ``.pth``, ``.bin`` or ``.safetensors``).

    Returns:
        (state_dict, is_torchscript): the tensors by name, and whether the file was a
        TorchScript archive (which means an OpenAI release file).

    Raises:
        CheckpointError: the file does not exist or is not a state dict of tensors.
    """
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"CLIP weights file not found: {path!r}. `python tools/fetch_weights.py` downloads the OpenAI "
            f"release files the configs name (~/.cache/clip/RN50.pt, ~/.cache/clip/ViT-B-16.pt; checksums "
            f"verified); or set MODEL.BACKBONE.PRETRAIN_PATH to another local OpenAI or open_clip file; or "
            f"train from random weights with MODEL.BACKBONE.PRETRAIN False."
        )
    is_ts = False
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file  # noqa: PLC0415 - only for .safetensors files (safetensors comes with open_clip)

        obj = load_file(path, device="cpu")
    elif _is_torchscript_archive(path):
        is_ts = True
        with warnings.catch_warnings():
            # torch.jit.load is deprecated on torch >= 2.9 but is the only reader of these archives.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            obj = torch.jit.load(path, map_location="cpu").state_dict()
        obj = {k: v for k, v in obj.items() if k not in _OPENAI_EXTRA_KEYS}
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle errors carry no hint of what the file should be
            raise CheckpointError(
                f"Could not read CLIP weights from {path!r} ({type(e).__name__}: {e}). Expected an "
                f"OpenAI CLIP release file (TorchScript archive), a plain state dict saved with "
                f"torch.save, or a .safetensors file."
            ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path!r} does not hold a state dict of tensors (got {type(obj).__name__}); expected "
            f"CLIP weights with keys like 'visual.conv1.weight' and 'token_embedding.weight'."
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    for k in _OPENAI_EXTRA_KEYS:  # plain-dict conversions of the archive may keep them
        obj.pop(k, None)
    return dict(obj), is_ts


def convert_openai_checkpoint(src: str, dst: str) -> None:
    """Convert an OpenAI TorchScript release file once into a plain state dict.

    The result loads with ``torch.load(dst, weights_only=True)`` (no deprecated
    ``torch.jit.load``) and is accepted by :func:`load_clip` exactly like the original; the
    tensors keep their dtypes, so both build the same model.

    Args:
        src: OpenAI release file (TorchScript archive or plain state dict).
        dst: output path (written atomically).
    """
    sd, _ = read_clip_checkpoint(src)
    atomic_write(dst, lambda f: torch.save(sd, f))


# ---------------------------------------------------------------------------------------------
# OpenAI format: architecture from shapes
# ---------------------------------------------------------------------------------------------
def is_openai_state_dict(sd: Dict[str, torch.Tensor]) -> bool:
    """Whether ``sd`` has OpenAI CLIP's layout (also open_clip's layout for built-in CLIP models).

    Args:
        sd: a state dict.

    Returns:
        True when the image tower (ViT or ModifiedResNet) and the text tower keys are present.
    """
    has_visual = "visual.proj" in sd or "visual.attnpool.positional_embedding" in sd
    return has_visual and "visual.conv1.weight" in sd and all(
        k in sd for k in ("token_embedding.weight", "positional_embedding", "text_projection", "ln_final.weight")
    )


def infer_openai_model_config(sd: Dict[str, torch.Tensor]) -> dict:
    """Read the CLIP hyper-parameters from an OpenAI-format state dict (as OpenAI's build_model).

    Args:
        sd: OpenAI-format state dict (see :func:`is_openai_state_dict`).

    Returns:
        An open_clip model config: ``{"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}``.
    """
    if "visual.proj" in sd:
        width = sd["visual.conv1.weight"].shape[0]
        layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_cfg = {"image_size": patch * grid, "layers": layers, "width": width, "patch_size": patch}
    else:
        layers = [len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4)]
        width = sd["visual.layer1.0.conv1.weight"].shape[0]
        n_pos = sd["visual.attnpool.positional_embedding"].shape[0]
        grid = round((n_pos - 1) ** 0.5)
        if grid * grid + 1 != n_pos:
            raise CheckpointError(
                f"visual.attnpool.positional_embedding has {n_pos} rows, not a square grid + 1: this is "
                f"not an OpenAI release file (a CLIP-ReID checkpoint goes in MODEL.WEIGHTS instead)."
            )
        vision_cfg = {"image_size": grid * 32, "layers": layers, "width": width, "patch_size": None}
    text_width = sd["ln_final.weight"].shape[0]
    text_cfg = {
        "context_length": sd["positional_embedding"].shape[0],
        "vocab_size": sd["token_embedding.weight"].shape[0],
        "width": text_width,
        "heads": text_width // 64,
        "layers": len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
    }
    return {"embed_dim": sd["text_projection"].shape[1], "vision_cfg": vision_cfg, "text_cfg": text_cfg,
            "quick_gelu": True}


# Prefixes under which CLIP-ReID checkpoints (this toolkit's and the reference's) hold the towers.
_REID_PREFIXES = (("backbone.visual.", "visual."), ("image_encoder.", "visual."),
                  ("text_head.text_encoder.", ""), ("text_encoder.", ""))


def infer_model_config_from_reid_checkpoint(path: str) -> dict:
    """The CLIP architecture of a CLIP-ReID checkpoint (this toolkit's ``model_*.pth`` or a
    reference ``ViT-B-16_60.pth``), read from its tensor shapes, for building the model without
    the original CLIP weights file.

    The positional embeddings of such checkpoints are resized to the ReID grid and the token
    embedding is not kept, so the image size is set to a square one (the ReID backbone resizes
    it again, and the checkpoint overwrites it) and the vocabulary is CLIP's BPE. A checkpoint
    without a text tower (a CLIP baseline) gets a one-layer text tower of its embedding width.

    Args:
        path: the checkpoint.

    Returns:
        An open_clip model config (see :func:`infer_openai_model_config`).

    Raises:
        CheckpointError: the file holds no CLIP image tower.
    """
    sd = read_state_dict(path, mmap=True)  # only shapes are read: the weights stay on disk
    mapped: Dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        for prefix, new in _REID_PREFIXES:
            if key.startswith(prefix):
                mapped[new + key[len(prefix):]] = value
                break
    if "visual.conv1.weight" not in mapped:
        raise CheckpointError(f"{path} holds no CLIP image tower (no backbone.visual.* / image_encoder.* keys): "
                              f"set CLIPREID.BACKBONE.MODEL_NAME to the open_clip model it was trained as.")
    embed = (mapped["visual.proj"].shape[1] if "visual.proj" in mapped
             else mapped["visual.attnpool.c_proj.weight"].shape[0])
    if "text_projection" not in mapped:  # no text tower in the file: a small stand-in of the right width
        mapped.update({"ln_final.weight": torch.zeros(64), "positional_embedding": torch.zeros(77, 64),
                       "text_projection": torch.zeros(64, embed), "transformer.resblocks.0.ln_1.weight": torch.zeros(64)})
    mapped["token_embedding.weight"] = torch.empty(clip_tokenizer._tokenizer.vocab_size, 0)
    if "visual.proj" in mapped:  # a square grid the ViT tower is built with before the ReID resize
        patch = mapped["visual.conv1.weight"].shape[-1]
        mapped["visual.positional_embedding"] = torch.zeros(14 * 14 + 1, mapped["visual.conv1.weight"].shape[0])
        cfg = infer_openai_model_config(mapped)
        cfg["vision_cfg"]["image_size"] = patch * 14
    else:
        mapped["visual.attnpool.positional_embedding"] = torch.zeros(7 * 7 + 1, 1)
        cfg = infer_openai_model_config(mapped)
    return cfg


def _describe(cfg: dict) -> str:
    v = cfg["vision_cfg"]
    kind = f"ViT width {v['width']}, {v['layers']} layers, patch {v['patch_size']}" if v.get("patch_size") \
        else f"ModifiedResNet layers {tuple(v['layers'])}, width {v['width']}"
    return f"{kind}, embed dim {cfg['embed_dim']}"


def _check_matches_name(inferred: dict, model_name: str, path: str) -> None:
    """Fail when the OpenAI file's architecture differs from the model the user named."""
    named = _model_config(model_name)
    nv, iv = named.get("vision_cfg", {}), inferred["vision_cfg"]
    same = named.get("embed_dim") == inferred["embed_dim"] and all(
        (list(nv.get(k)) if isinstance(nv.get(k), (list, tuple)) else nv.get(k))
        == (list(iv[k]) if isinstance(iv[k], (list, tuple)) else iv[k])
        for k in ("width", "layers", "patch_size")
    )
    if not same:
        raise ConfigError(
            f"The weights in {path!r} are a {_describe(inferred)} model, but "
            f"CLIPREID.BACKBONE.MODEL_NAME is {model_name!r} ({_describe(named)}). Fix the model name "
            f"or the weights path (or leave MODEL_NAME empty to take the architecture from the file)."
        )


# ---------------------------------------------------------------------------------------------
# open_clip names
# ---------------------------------------------------------------------------------------------
def _clean_name(model_name: str) -> str:
    # OpenAI spells "ViT-B/16", open_clip "ViT-B-16" (open_clip applies the same rewrite).
    return model_name.replace("/", "-") if ":" not in model_name else model_name


def _model_config(model_name: str) -> dict:
    """The open_clip config of ``model_name``, or a ValueError naming the closest valid names."""
    register_toolkit_model_configs()
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        names = open_clip.list_models()
        close = difflib.get_close_matches(model_name, names, n=5, cutoff=0.5)
        hint = f" Closest open_clip names: {', '.join(close)}." if close else ""
        raise ConfigError(
            f"Unknown open_clip model name {model_name!r} (CLIPREID.BACKBONE.MODEL_NAME).{hint} "
            f"All names: open_clip.list_models() ({len(names)} models)."
        )
    return cfg


def _load_into(model: torch.nn.Module, sd: Dict[str, torch.Tensor], source: str) -> None:
    """Strict load with one readable message for missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    bad_shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in sd.items() if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if bad_shapes or missing or unexpected:
        parts = []
        if bad_shapes:
            parts.append("shape mismatches: " + "; ".join(bad_shapes[:5]))
        if missing:
            parts.append(f"{len(missing)} keys missing from the file (e.g. {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:5])})")
        raise CheckpointError(f"The weights in {source} do not fit the model: " + "; ".join(parts) +
                              ". Check CLIPREID.BACKBONE.MODEL_NAME against the checkpoint.")
    # load_state_dict copies into the fp32 parameters, so fp16 tensors of the file are up-cast
    # exactly (every fp16 value is representable in fp32).
    model.load_state_dict(sd, strict=True)


def _resolve_quick_gelu(quick_gelu: Optional[bool], default: bool, source: str) -> bool:
    if quick_gelu is None:
        return default
    if quick_gelu != default:
        logger.warning("QuickGELU forced to %s for %s (the source was trained with %s).",
                       quick_gelu, source, "QuickGELU" if default else "nn.GELU")
    return quick_gelu


class _NoRandomInitWarning(logging.Filter):
    """Drops open_clip's root-logger "No pretrained weights loaded ..." warning: a random init is
    what was asked for, and :func:`load_clip` says so itself (or the checkpoint load that follows)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


def _create(model_name: str, quick_gelu: bool, pretrained: Optional[str] = None):
    """open_clip.create_model in fp32 with the activation set either way (force_* only turns it on)."""
    extra = {} if quick_gelu else {"quick_gelu": False}
    quiet = _NoRandomInitWarning()
    logging.getLogger().addFilter(quiet)
    try:
        return open_clip.create_model(model_name, pretrained=pretrained or None, precision="fp32",
                                      force_quick_gelu=quick_gelu, **extra)
    finally:
        logging.getLogger().removeFilter(quiet)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def load_clip(model_name: str = "", weights: str = "", pretrained_tag: str = "", *,
              quick_gelu: Optional[bool] = None, model_cfg: Optional[dict] = None, weights_follow: bool = False):
    """Build a float32 open_clip CLIP model from local weights, a pretrained tag or random init.

    Which source is used:

    * ``weights`` set: the file is read (:func:`read_clip_checkpoint`). It is taken as an
      **OpenAI release** when it is a TorchScript archive, when ``model_name`` is empty, or when
      it is in OpenAI layout and holds fp16 tensors (OpenAI's files are partly fp16; open_clip
      training checkpoints are not); the architecture then comes from the shapes (and must
      match ``model_name`` when one is given) and QuickGELU is used. Otherwise it is an
      **open_clip checkpoint** of ``model_name`` with that config's activation.
    * else ``pretrained_tag`` set: ``open_clip.create_model(model_name, pretrained=tag)`` with
      the tag's QuickGELU setting (network or cache; open_clip does not fall back offline).
    * else: random init of ``model_name`` with QuickGELU (CLIP-ReID checkpoints, loaded later
      through MODEL.WEIGHTS, are OpenAI-architecture models), or of ``model_cfg`` when no name
      is given (an architecture read from a checkpoint, see
      :func:`infer_model_config_from_reid_checkpoint`).

    Args:
        model_name: open_clip model name ("ViT-B-16", "RN50", "ViT-L-14", ...; "ViT-B/16" is
            accepted). May be empty only with an OpenAI-format ``weights`` file.
        weights: local weights file ("" = none).
        pretrained_tag: open_clip pretrained tag ("" = none); ignored when ``weights`` is set.
        quick_gelu: override the activation choice above (None = automatic). Needed only for
            an open_clip-layout fp32 file holding OpenAI weights under a GELU model name.
        model_cfg: an open_clip model config for random init without a name.
        weights_follow: a checkpoint will overwrite the random weights (``MODEL.WEIGHTS``): no
            "random weights" note, the checkpoint's load says what was loaded.

    Returns:
        open_clip.model.CLIP in float32 on the CPU, in eval mode.

    Raises:
        CheckpointError: ``weights`` does not exist, cannot be read or does not fit the model,
            or the pretrained tag could not be fetched.
        ConfigError: unknown model name or tag.
    """

    model_name = _clean_name(model_name or "")
    if weights:
        sd, is_ts = read_clip_checkpoint(weights)
        openai_layout = is_openai_state_dict(sd)
        has_fp16 = any(v.dtype == torch.float16 for v in sd.values())
        if is_ts or (openai_layout and (not model_name or has_fp16)):
            if not openai_layout:
                raise CheckpointError(
                    f"{weights!r} is not in OpenAI CLIP layout (no 'visual.conv1.weight'/'text_projection' "
                    f"...); give CLIPREID.BACKBONE.MODEL_NAME for an open_clip checkpoint."
                )
            cfg = infer_openai_model_config(sd)
            if model_name:
                _check_matches_name(cfg, model_name, weights)
            cfg["quick_gelu"] = _resolve_quick_gelu(quick_gelu, True, f"OpenAI weights {weights!r}")
            model = CLIP(**cfg)
            _load_into(model, sd, repr(weights))
            logger.info("Loaded OpenAI CLIP weights from %s (%s, QuickGELU=%s).", weights, _describe(cfg),
                        cfg["quick_gelu"])
        else:
            if not model_name:
                raise ConfigError(
                    f"{weights!r} is not an OpenAI CLIP file; set CLIPREID.BACKBONE.MODEL_NAME to the "
                    f"open_clip model it was trained as."
                )
            cfg = _model_config(model_name)
            qg = _resolve_quick_gelu(quick_gelu, bool(cfg.get("quick_gelu", False)), f"{model_name} checkpoint")
            model = _create(model_name, qg)

            sd = convert_state_dict(model, sd)
            if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
                sd = convert_to_custom_text_state_dict(sd)
            if "logit_scale" in sd and sd["logit_scale"].ndim != model.logit_scale.ndim:
                sd["logit_scale"] = sd["logit_scale"].reshape(model.logit_scale.shape)
            _load_into(model, sd, repr(weights))
            logger.info("Loaded open_clip %s weights from %s (QuickGELU=%s).", model_name, weights, qg)
    elif pretrained_tag:
        if not model_name:
            raise ConfigError("CLIPREID.BACKBONE.PRETRAINED_TAG needs CLIPREID.BACKBONE.MODEL_NAME.")
        _model_config(model_name)
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained_tag)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise ConfigError(
                f"Unknown pretrained tag {pretrained_tag!r} for {model_name!r} "
                f"(CLIPREID.BACKBONE.PRETRAINED_TAG). Known tags: {', '.join(tags) or '(none)'}."
            )
        qg = _resolve_quick_gelu(quick_gelu, bool(tag_cfg.get("quick_gelu", False)), f"tag {pretrained_tag!r}")
        try:
            model = _create(model_name, qg, pretrained_tag)
        except RuntimeError as e:
            raise CheckpointError(
                f"Could not fetch open_clip weights {model_name}/{pretrained_tag} ({e}). Without network "
                f"access put the file on disk and set MODEL.BACKBONE.PRETRAIN_PATH to it instead."
            ) from None
    elif model_cfg is not None:
        cfg = dict(model_cfg, quick_gelu=_resolve_quick_gelu(quick_gelu, True, "an inferred architecture"))
        model = CLIP(**cfg)
        if not weights_follow:
            logger.info("Built %s with random weights (QuickGELU=%s).", _describe(cfg), cfg["quick_gelu"])
    else:
        if not model_name:
            raise ConfigError("Set CLIPREID.BACKBONE.MODEL_NAME (an open_clip model name) or a weights file.")
        _model_config(model_name)
        qg = True if quick_gelu is None else quick_gelu
        model = _create(model_name, qg)
        if not weights_follow:
            logger.info("Built %s with random weights (QuickGELU=%s).", model_name, qg)
    return model.float().eval()
