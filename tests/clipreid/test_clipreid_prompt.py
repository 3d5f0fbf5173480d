"""Prompt learner and text encoder on their own: tokenisation, buffers, the truncated text pass.

The full parity of the text side inside CLIPReID is in test_clipreid_model.py.
"""

import os

import pytest
import torch

from clipreid_plugin.config import get_cfg
from clipreid_plugin.plugins.clipreid.clip_weights import load_clip
from clipreid_plugin.plugins.clipreid.prompt_learner import (
    PromptLearnerHead, prompt_text, resolve_class_word, tokenize_prompt)

from clipreid_refs import FEATURE_ATOL, assert_close, max_abs_err


def _head(case, load_reference_state=True):
    cfg = get_cfg()
    cfg.MODEL.HEADS.NUM_CLASSES = case["meta"]["num_classes"]
    cfg.MODEL.PROMPT.CLASS_WORD = "person"
    head = PromptLearnerHead(cfg, 0, load_clip(weights=case["tiny_clip_path"]))
    if load_reference_state:
        text_side = {k: v for k, v in case["state_dict"].items()
                     if k.startswith(("prompt_learner.", "text_encoder."))}
        missing, unexpected = head.load_state_dict(text_side, strict=False)
        assert not unexpected and set(missing) == {"text_features", "text_features_ready"}
    return head


@pytest.fixture(scope="module")
def head(case):
    return _head(case)


def test_tokenize_templates(reference_dir):
    aux = torch.load(os.path.join(reference_dir, "aux_refs.pt"), weights_only=True)["outputs"]
    for word in ("person", "vehicle"):
        tokens = tokenize_prompt(prompt_text(word, 4))
        assert torch.equal(tokens, aux[f"tokenize_{word}"]), word
        assert int(tokens.argmax()) == 11  # EOT


def test_class_word_from_config():
    cfg = get_cfg()
    cfg.MODEL.PROMPT.CLASS_WORD = "vehicle"
    assert prompt_text(resolve_class_word(cfg), 4) == "A photo of a X X X X vehicle."
    cfg.MODEL.PROMPT.CLASS_WORD = ""
    assert resolve_class_word(cfg) == "person"  # reference default for unknown datasets
    cfg.MODEL.PROMPT.TEMPLATE = "vehicle"
    assert resolve_class_word(cfg) == "vehicle"
    cfg.MODEL.PROMPT.TEMPLATE = "a photo of"
    with pytest.raises(ValueError, match="MODEL.PROMPT.TEMPLATE"):
        resolve_class_word(cfg)


def test_missing_num_classes_is_explained(case):
    cfg = get_cfg()
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        PromptLearnerHead(cfg, 0, load_clip(weights=case["tiny_clip_path"]))


def test_prefix_suffix_buffers_from_token_embedding(case):
    # Built from the tiny CLIP's token embedding only (not loaded from the case).
    fresh = _head(case, load_reference_state=False)
    sd = case["state_dict"]
    for name in ("token_prefix", "token_suffix"):
        assert max_abs_err(getattr(fresh.prompt_learner, name), sd[f"prompt_learner.{name}"]) == 0.0
    assert fresh.prompt_learner.cls_ctx.shape == sd["prompt_learner.cls_ctx"].shape
    assert 0.015 < fresh.prompt_learner.cls_ctx.std().item() < 0.025  # N(0, 0.02)
    assert not any(p.requires_grad for p in fresh.parameters())  # text side frozen until stage 1


@pytest.mark.parametrize("truncate", [True, False])
def test_text_features_full_and_truncated(head, case, truncate):
    out, labels = case["outputs"], case["inputs"]["labels"]
    head.text_encoder.truncate = truncate
    try:
        with torch.no_grad():
            assert_close(head(labels), out["get_text_features"], "get_text_features")
            all_feats = head.compute_all_text_features(batch_size=3)  # chunks 3 + 3 + 1
        assert_close(all_feats, out["get_text_features_all_classes"], "all classes")
    finally:
        head.text_encoder.truncate = True


def test_truncated_pass_equals_full_pass(head):
    labels = torch.arange(head.prompt_learner.cls_ctx.shape[0])
    with torch.no_grad():
        head.text_encoder.truncate = False
        full = head(labels)
        head.text_encoder.truncate = True
        short = head(labels)
    assert max_abs_err(short, full) <= FEATURE_ATOL


def test_truncated_pass_gradient_equals_full_pass(head):
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
    assert_close(grads[1], grads[0], "cls_ctx grad, truncated vs full")
    assert grads[0][[1, 3, 4, 6]].abs().max() == 0  # identities not in the batch get no gradient
