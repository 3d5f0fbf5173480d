"""CLIP-ReID's text side: identity-specific prompts and the frozen CLIP text tower.

Each training identity ``c`` gets ``N_CTX`` learnable token embeddings ``cls_ctx[c]`` that
replace the X's of "A photo of a X X X X person." (spec 2.6). The text tower is the CLIP
model's own causal transformer, read out at the end-of-text (EOT) token and projected into the
joint image-text space. Parameter names below ``text_encoder.`` and ``prompt_learner.`` are
OpenAI/open_clip's and the reference's, so reference checkpoints map by prefix only.
"""

import logging
from typing import Optional

import torch
from open_clip import tokenizer as clip_tokenizer
from torch import nn

from clipreid_plugin.config import configurable
from clipreid_plugin.modeling import HEAD_REGISTRY
from clipreid_plugin.utils.errors import ConfigError

from .backbone import load_clip_from_config

__all__ = ["prompt_text", "resolve_class_word", "tokenize_prompt", "PromptLearner", "TextEncoder",
           "PromptLearnerHead"]

logger = logging.getLogger(__name__)

# The template's words before the learnable tokens; their count fixes the prefix length.
_PREFIX_WORDS = "A photo of a"
# Pooling types of open_clip text towers that read the EOT position (CLIP BPE: EOT has the
# largest token id, so "argmax" and "eos" pick the same position).
_EOT_POOLING = ("argmax", "eos")


def prompt_text(class_word: str, n_ctx: int) -> str:
    """Returns: the prompt template, e.g. ``"A photo of a X X X X person."`` for n_ctx 4."""
    return " ".join([_PREFIX_WORDS] + ["X"] * n_ctx + [class_word]) + "."


def resolve_class_word(cfg) -> str:
    """The class word of the prompt from ``CLIPREID.PROMPT.TEMPLATE`` / ``CLASS_WORD``.

    Args:
        cfg: the config.

    Returns:
        ``CLASS_WORD`` (filled from the training dataset's kind) when TEMPLATE is "auto",
        "person" when that is empty (as the reference does for datasets it does not know),
        otherwise TEMPLATE itself.
    """
    template = cfg.CLIPREID.PROMPT.TEMPLATE.strip()
    if template != "auto":
        if not template or len(template.split()) != 1:
            raise ConfigError(
                f"CLIPREID.PROMPT.TEMPLATE must be 'auto' or one class word such as 'person' or "
                f"'vehicle', got {cfg.CLIPREID.PROMPT.TEMPLATE!r}."
            )
        return template
    word = cfg.CLIPREID.PROMPT.CLASS_WORD.strip()
    if not word:
        logger.warning("CLIPREID.PROMPT.CLASS_WORD is empty (no dataset kind given): using 'person'.")
        return "person"
    return word


def tokenize_prompt(text: str, context_length: int = 77) -> torch.Tensor:
    """Tokenize with CLIP's BPE (bundled with open_clip; lower-cases; no network).

    Args:
        text: the prompt.
        context_length: padded length (the text tower's number of positions).

    Returns:
        (1, context_length) int64 token ids: SOT, text, EOT, zeros.
    """
    return clip_tokenizer.tokenize([text], context_length=context_length)


class PromptLearner(nn.Module):
    """Builds the prompt embeddings ``[prefix; cls_ctx[label]; suffix]`` of each identity.

    ``token_prefix`` / ``token_suffix`` are the token embeddings of the fixed words around the
    X's, computed once from the CLIP token embedding (which is not kept) and saved in
    checkpoints; ``cls_ctx`` (C, n_ctx, width) is the only learnable tensor.

    Args:
        num_classes: number of training identities C.
        n_ctx: learnable tokens per identity.
        token_embedding: the CLIP model's token embedding (read once, not stored).
        tokenized_prompt: (1, L) token ids of the template (see :func:`tokenize_prompt`).
        ctx_init_std: std of the normal init of ``cls_ctx``.
    """

    def __init__(self, num_classes: int, n_ctx: int, token_embedding: nn.Embedding,
                 tokenized_prompt: torch.Tensor, ctx_init_std: float = 0.02):
        super().__init__()
        if num_classes <= 0:
            raise ConfigError(
                "The prompt learner needs one set of tokens per training identity, but "
                f"MODEL.HEADS.NUM_CLASSES is {num_classes}; set it (the trainer fills it from "
                "the training set)."
            )
        n_prefix = 1 + len(clip_tokenizer._tokenizer.encode(_PREFIX_WORDS))  # SOT + words
        width = token_embedding.weight.shape[1]
        with torch.no_grad():
            weight = token_embedding.weight
            embedded = token_embedding(tokenized_prompt.to(weight.device)).float().cpu()
        # Non-persistent like the reference's plain attribute: rebuilt from the config.
        self.register_buffer("tokenized_prompts", tokenized_prompt.clone(), persistent=False)
        self.register_buffer("token_prefix", embedded[:, :n_prefix].clone())
        self.register_buffer("token_suffix", embedded[:, n_prefix + n_ctx:].clone())
        self.cls_ctx = nn.Parameter(torch.empty(num_classes, n_ctx, width))
        nn.init.normal_(self.cls_ctx, std=ctx_init_std)
        # The EOT position is the same for every identity: all prompts share one template.
        self.eot_index = int(tokenized_prompt[0].argmax())

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """Args: labels (B,) identity indices in [0, C).

        Returns:
            (B, L, width) prompt embeddings.
        """
        b = labels.shape[0]
        return torch.cat([
            self.token_prefix.expand(b, -1, -1),
            self.cls_ctx[labels],
            self.token_suffix.expand(b, -1, -1),
        ], dim=1)


class TextEncoder(nn.Module):
    """CLIP's text tower applied to prompt embeddings: + positional embedding, causal
    transformer (batch-first, open_clip 3.x), ln_final, the EOT row, text projection.

    Because the mask is causal, positions after the EOT token never influence it: with
    ``truncate`` the pass stops at EOT + 1 tokens (12 of 77 for the 4-token template), which
    gives the same features for a fraction of the compute.

    Args:
        clip_model: an open_clip ``CLIP`` (or its ``TextTransformer``), fp32; its text modules
            are taken over (shared, not copied).
        truncate: run only the first EOT + 1 positions.
    """

    def __init__(self, clip_model: nn.Module, truncate: bool = True):
        super().__init__()
        text = getattr(clip_model, "text", clip_model)  # CustomTextCLIP keeps the tower in .text
        pool = getattr(text, "text_pool_type", getattr(text, "pool_type", None))
        attn_mask = getattr(text, "attn_mask", None)
        if pool not in _EOT_POOLING or attn_mask is None:
            raise ConfigError(
                "CLIP-ReID's prompt learner needs a causal CLIP text tower read out at the "
                f"end-of-text token (pool type one of {_EOT_POOLING}); this model has pool type "
                f"{pool!r} and {'no' if attn_mask is None else 'a'} causal mask. Use an "
                "OpenAI-style CLIP model (CLIPREID.BACKBONE.MODEL_NAME such as ViT-B-16 or RN50)."
            )
        if getattr(text, "vocab_size", 49408) != clip_tokenizer._tokenizer.vocab_size:
            raise ConfigError(
                f"The text tower's vocabulary ({text.vocab_size} tokens) is not CLIP's BPE "
                f"({clip_tokenizer._tokenizer.vocab_size}); the prompt learner only supports "
                "CLIP-tokenized text towers."
            )
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.register_buffer("attn_mask", attn_mask.detach().clone().float(), persistent=False)
        self.truncate = truncate

    @property
    def context_length(self) -> int:
        """Number of token positions of the tower (77 for OpenAI CLIP)."""
        return self.positional_embedding.shape[0]

    @property
    def output_dim(self) -> int:
        """Width of the projected text feature (the joint embedding dimension)."""
        proj = self.text_projection
        if proj is None:
            return self.ln_final.weight.shape[0]
        return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]

    def forward(self, prompts: torch.Tensor, eot_index: int) -> torch.Tensor:
        """Args:
            prompts: (B, L, width) prompt embeddings.
            eot_index: position of the end-of-text token (the same for every prompt).

        Returns:
            (B, D) projected text features (not normalised).
        """
        length = eot_index + 1 if self.truncate else prompts.shape[1]
        x = prompts[:, :length] + self.positional_embedding[:length].to(prompts.dtype)
        mask = self.attn_mask[:length, :length].to(x.dtype)
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x[:, eot_index])
        proj = self.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


@HEAD_REGISTRY.register()
class PromptLearnerHead(nn.Module):
    """Identity labels -> text features through learnable prompts and the frozen text tower.

    A ``"text"`` head (``HEAD_KIND``): CLIPReID builds it from ``CLIPREID.PROMPT.HEAD_NAME``; a
    meta-architecture that needs a feature head rejects it when the model is built.

    Also holds the text features of every identity that stage 2 uses as a fixed classifier
    (buffer ``text_features``, saved in checkpoints so that stage 2 resumes without stage 1).
    The text tower is frozen (``requires_grad=False``) for good: stage 1 back-propagates
    through it to ``cls_ctx`` only, and the reference never updates it. ``cls_ctx`` starts
    frozen too (as the reference's make_optimizer_2stage leaves it for stage 2); the stage-1
    hook turns it on for its phase.

    Built from a config (``MODEL.HEADS.NUM_CLASSES``, ``CLIPREID.PROMPT.{N_CTX, TEMPLATE,
    CLASS_WORD, CTX_INIT_STD, TRUNCATE_AT_EOT}``; ``MODEL.BACKBONE.*`` / ``CLIPREID.BACKBONE.*``
    for the weights when no ``clip_model`` is given) or from plain arguments.

    Args:
        clip_model: the open_clip CLIP model whose text tower to use (the meta-architecture
            passes the one its image backbone came from, so CLIP is loaded once).
        num_classes: identities (one prompt each).
        class_word: the prompt's class word ("person", "vehicle").
        n_ctx: learnable tokens per identity.
        ctx_init_std: std of their normal initialisation.
        truncate_at_eot: run the text transformer only up to the end-of-text token.
        in_dim: width of the image feature (unused: the head works in the text tower's space;
            part of every head's build context).
    """

    HEAD_KIND = "text"

    @configurable
    def __init__(self, *, clip_model: nn.Module, num_classes: int, class_word: str = "person", n_ctx: int = 4,
                 ctx_init_std: float = 0.02, truncate_at_eot: bool = True, in_dim: int = 0):
        super().__init__()
        self.text_encoder = TextEncoder(clip_model, truncate=truncate_at_eot)
        self.text_encoder.requires_grad_(False)
        text = getattr(clip_model, "text", clip_model)
        self.prompt_text = prompt_text(class_word, n_ctx)
        tokens = tokenize_prompt(self.prompt_text, self.text_encoder.context_length)
        self.prompt_learner = PromptLearner(num_classes, n_ctx, text.token_embedding, tokens, ctx_init_std)
        self.prompt_learner.cls_ctx.requires_grad_(False)
        self.out_dim = self.text_encoder.output_dim
        self.register_buffer("text_features", torch.zeros(num_classes, self.out_dim))
        # 0/1 flag saved with the features: a checkpoint tells whether stage 1 produced them.
        self.register_buffer("text_features_ready", torch.zeros((), dtype=torch.uint8))
        # Python copy of the flag, so that every training step does not read it from the GPU.
        self._ready = False
        self.register_load_state_dict_post_hook(PromptLearnerHead._sync_ready_flag)

    @classmethod
    def from_config(cls, cfg, in_dim: int = 0, clip_model: Optional[nn.Module] = None) -> dict:
        """Arguments from the config; the CLIP model is loaded
        (:func:`~clipreid_plugin.plugins.clipreid.backbone.load_clip_from_config`) unless given."""
        p = cfg.CLIPREID.PROMPT
        return {"clip_model": load_clip_from_config(cfg) if clip_model is None else clip_model,
                "num_classes": cfg.MODEL.HEADS.NUM_CLASSES, "class_word": resolve_class_word(cfg), "n_ctx": p.N_CTX,
                "ctx_init_std": p.CTX_INIT_STD, "truncate_at_eot": p.TRUNCATE_AT_EOT, "in_dim": in_dim}

    @staticmethod
    def _sync_ready_flag(module: "PromptLearnerHead", incompatible_keys) -> None:
        module._ready = bool(module.text_features_ready)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """Args: labels (B,) identity indices.

        Returns:
            (B, D) text features of those identities' prompts (differentiable w.r.t.
            ``cls_ctx`` when it is trainable).
        """
        prompts = self.prompt_learner(labels.to(self.prompt_learner.cls_ctx.device))
        return self.text_encoder(prompts, self.prompt_learner.eot_index)

    @torch.no_grad()
    def compute_all_text_features(self, batch_size: int = 64) -> torch.Tensor:
        """Text features of identities 0..C-1, in chunks of ``batch_size`` classes.

        Args:
            batch_size: identities per text-encoder pass (bounds memory).

        Returns:
            (C, D) features in the dtype of the stored ones (float32, or float64 for a model
            made ``.double()``), not stored (see :meth:`set_text_features`).
        """
        device = self.prompt_learner.cls_ctx.device
        num_classes = self.prompt_learner.cls_ctx.shape[0]
        chunks = [self(torch.arange(i, min(i + batch_size, num_classes), device=device))
                  for i in range(0, num_classes, batch_size)]
        return torch.cat(chunks).to(self.text_features.dtype)

    @torch.no_grad()
    def set_text_features(self, feats: torch.Tensor) -> None:
        """Store the (C, D) text features of every identity for stage 2."""
        if feats.shape != self.text_features.shape:
            raise ConfigError(
                f"Text features of shape {tuple(feats.shape)} do not fit the model's "
                f"{tuple(self.text_features.shape)} (identities x embedding dim)."
            )
        self.text_features.copy_(feats)
        self.text_features_ready.fill_(1)
        self._ready = True

    def has_text_features(self) -> bool:
        """Returns: whether :meth:`set_text_features` ran (or a loaded checkpoint carried them)."""
        return self._ready
