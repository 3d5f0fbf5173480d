"""Prompt learner and text encoder on their own (tiny CLIP built locally): tokenisation, the
prefix / suffix buffers, the text pass against open_clip's own ``encode_text``, the truncated
pass, chunked text features."""

import pytest
import torch

from clipreid_plugin.config import get_cfg
from clipreid_plugin.plugins.clipreid.clip_weights import load_clip
from clipreid_plugin.plugins.clipreid.prompt_learner import (
    PromptLearnerHead, prompt_text, resolve_class_word, tokenize_prompt)

from tiny_clip import TINY_VIT, max_err

NUM_CLASSES = 7
TOL = 1e-5
# CLIP BPE ids of "A photo of a X X X X <word>." (CLIPREID_SPEC.md 2.6): SOT 49406, a 320,
# photo 1125, of 539, a 320, x 343 (four times), person 2533 | vehicle 5299, "." 269, EOT 49407.
PREFIX_IDS = [49406, 320, 1125, 539, 320]
X_ID = 343
WORD_IDS = {"person": 2533, "vehicle": 5299}
DOT_ID, EOT_ID = 269, 49407


@pytest.fixture(scope="module")
def clip():
    """A random tiny CLIP (ReID-Tiny-ViT-16: text width 64, 2 layers, embed dim 64)."""
    torch.manual_seed(0)
    return load_clip(TINY_VIT)


def _cfg():
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    cfg.MODEL.HEADS.NUM_CLASSES = NUM_CLASSES
    cfg.CLIPREID.PROMPT.CLASS_WORD = "person"
    return cfg


@pytest.fixture(scope="module")
def head(clip):
    """PromptLearnerHead on the tiny CLIP, 7 identities, the person prompt."""
    torch.manual_seed(1)
    return PromptLearnerHead(_cfg(), clip_model=clip)


@pytest.mark.parametrize("word", ["person", "vehicle"])
def test_tokenize_templates(word):
    """The template's token ids are CLIP BPE's (spec 2.6), padded with zeros to 77; EOT at 11."""
    tokens = tokenize_prompt(prompt_text(word, 4))
    expected = PREFIX_IDS + [X_ID] * 4 + [WORD_IDS[word], DOT_ID, EOT_ID] + [0] * 65
    assert tokens.dtype == torch.int64 and tokens.tolist() == [expected]
    assert int(tokens.argmax()) == 11


def test_class_word_from_config():
    """TEMPLATE "auto" reads CLASS_WORD ("person" when empty); a one-word TEMPLATE is the word; else an error."""
    cfg = get_cfg(["clipreid_plugin.plugins.clipreid"])
    cfg.CLIPREID.PROMPT.CLASS_WORD = "vehicle"
    assert prompt_text(resolve_class_word(cfg), 4) == "A photo of a X X X X vehicle."
    cfg.CLIPREID.PROMPT.CLASS_WORD = ""
    assert resolve_class_word(cfg) == "person"  # reference default for unknown datasets
    cfg.CLIPREID.PROMPT.TEMPLATE = "vehicle"
    assert resolve_class_word(cfg) == "vehicle"
    cfg.CLIPREID.PROMPT.TEMPLATE = "a photo of"
    with pytest.raises(ValueError, match="CLIPREID.PROMPT.TEMPLATE"):
        resolve_class_word(cfg)


def test_missing_num_classes_is_explained(clip):
    """No identities (NUM_CLASSES 0): the error names the key."""
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        PromptLearnerHead(get_cfg(["clipreid_plugin.plugins.clipreid"]), clip_model=clip)


def test_prefix_suffix_buffers_from_token_embedding(head, clip):
    """token_prefix = the token embeddings of SOT "a photo of a" (positions 0..4), token_suffix =
    those of "person." EOT and the padding (positions 9..76); cls_ctx (C, 4, width) ~ N(0, 0.02),
    the whole text side frozen until stage 1."""
    emb = clip.token_embedding.weight
    pl = head.prompt_learner
    assert torch.equal(pl.token_prefix, emb[PREFIX_IDS].unsqueeze(0))
    assert torch.equal(pl.token_suffix, emb[[WORD_IDS["person"], DOT_ID, EOT_ID] + [0] * 65].unsqueeze(0))
    assert pl.cls_ctx.shape == (NUM_CLASSES, 4, 64)
    assert 0.015 < pl.cls_ctx.std().item() < 0.025
    assert not any(p.requires_grad for p in head.parameters())
    assert set(head.state_dict()) >= {"prompt_learner.token_prefix", "prompt_learner.token_suffix",
                                      "prompt_learner.cls_ctx", "text_features", "text_features_ready"}


@pytest.mark.parametrize("truncate", [True, False])
def test_text_features_equal_open_clip_encode_text(clip, truncate):
    """With every identity's tokens set to the embedding of "x", the prompts are the embedded
    template itself, so the text features must be open_clip's ``encode_text`` of the tokenised
    prompt (its own causal pass, EOT read-out and projection)."""
    torch.manual_seed(2)
    head = PromptLearnerHead(_cfg(), clip_model=clip)
    head.text_encoder.truncate = truncate
    with torch.no_grad():
        head.prompt_learner.cls_ctx.copy_(clip.token_embedding.weight[X_ID].expand(NUM_CLASSES, 4, -1))
        ours = head(torch.tensor([0, 3, 6]))
        expected = clip.encode_text(tokenize_prompt("A photo of a X X X X person."))
    assert ours.shape == (3, 64)
    assert max_err(ours, expected.expand(3, -1)) <= TOL


def test_truncated_pass_equals_full_pass(head):
    """The causal mask makes positions after EOT irrelevant: stopping at EOT + 1 gives the same features."""
    labels = torch.arange(NUM_CLASSES)
    try:
        with torch.no_grad():
            head.text_encoder.truncate = False
            full = head(labels)
            head.text_encoder.truncate = True
            short = head(labels)
    finally:
        head.text_encoder.truncate = True
    assert max_err(short, full) <= TOL


def test_truncated_pass_gradient_equals_full_pass(head):
    """The same holds for the gradient of cls_ctx; identities not in the batch get none."""
    labels = torch.tensor([0, 2, 2, 5])
    grads = []
    head.prompt_learner.cls_ctx.requires_grad_(True)
    try:
        for truncate in (False, True):
            head.text_encoder.truncate = truncate
            head.prompt_learner.cls_ctx.grad = None
            head(labels).pow(2).sum().backward()
            grads.append(head.prompt_learner.cls_ctx.grad.clone())
    finally:
        head.prompt_learner.cls_ctx.requires_grad_(False)
        head.prompt_learner.cls_ctx.grad = None
        head.text_encoder.truncate = True
    assert max_err(grads[1], grads[0]) <= TOL * max(1.0, grads[0].abs().max().item())
    assert grads[0].abs().sum() > 0
    assert grads[0][[1, 3, 4, 6]].abs().max() == 0


def test_all_text_features_in_chunks_equal_one_pass(head):
    """compute_all_text_features in chunks of 3 identities (3 + 3 + 1) = one pass over all 7, not stored."""
    with torch.no_grad():
        expected = head(torch.arange(NUM_CLASSES))
        chunked = head.compute_all_text_features(batch_size=3)
    assert chunked.shape == (NUM_CLASSES, 64) and chunked.dtype == torch.float32
    assert max_err(chunked, expected) <= TOL
    assert not head.has_text_features()
