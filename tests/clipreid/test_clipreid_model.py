"""CLIPReID against the reference CLIP-ReID tensors (both cases), plus its training contract:
which parameters each stage trains, the stage-2 text features in checkpoints, error messages,
and a non-CLIP image backbone."""

import io

import pytest
import torch

from clipreid_plugin.config import ConfigError, get_cfg
from clipreid_plugin.plugins.clipreid.clipreid import CLIPReID

from clipreid_parity import build_reference_model, reference_cfg, run_reference_steps
from clipreid_refs import assert_close, assert_grad_close

_FEATURES_AND_LOSSES = [
    "get_image_features", "tokenized_prompt", "prompt_embeddings", "get_text_features",
    "get_text_features_all_classes", "stage1_text_features_train_mode", "stage1_loss_i2t",
    "stage1_loss_t2i", "stage1_loss", "stage2_text_features_all_classes", "stage2_i2t_logits",
    "stage2_i2t_loss", "stage2_loss",
]


@pytest.fixture(scope="module")
def replay(case):
    """The case's stage-1 and stage-2 steps run once through CLIPReID: (pairs, model)."""
    return run_reference_steps(case)


@pytest.mark.parametrize("name", _FEATURES_AND_LOSSES)
def test_parity_features_and_losses(replay, name):
    ours, ref = replay[0][name]
    assert_close(ours, ref, name)


def test_parity_stage1_cls_ctx_grad(replay):
    ours, ref = replay[0]["stage1_grad_prompt_learner.cls_ctx"]
    assert_grad_close(ours, ref, "cls_ctx")


def test_parity_stage2_grads_of_every_trainable_parameter(replay, case):
    pairs, model = replay
    names = [k for k in pairs if k.startswith("stage2_grads.")]
    assert len(names) == len(case["outputs"]["stage2_grads"])
    for k in names:
        assert_grad_close(*pairs[k], k)
    # The reference's stage-2 optimizer groups (make_optimizer_2stage: one per parameter) name
    # exactly our trainable parameters (its stored grads leave out the largest matrices).
    key_map = type(model).REFERENCE_KEY_MAP
    expected = {next(dst + g["name"][len(src):] for src, dst in key_map if g["name"].startswith(src))
                for g in case["schedules"]["stage2_param_groups"]}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected


def test_stage1_trains_only_cls_ctx(case):
    model = build_reference_model(case)
    assert not any(p.requires_grad for p in model.text_head.parameters())  # frozen until stage 1
    assert model.stage1_parameters() == [model.text_head.prompt_learner.cls_ctx]
    model.text_head.prompt_learner.cls_ctx.requires_grad_(True)  # what the stage-1 hook does
    assert [n for n, p in model.text_head.named_parameters() if p.requires_grad] == ["prompt_learner.cls_ctx"]
    labels = case["inputs"]["labels"]
    sum(model.stage1_losses(case["outputs"]["get_image_features"], labels).values()).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n != "text_head.prompt_learner.cls_ctx")


def test_stage1_extraction_restores_modes_and_ignores_sie(case):
    model = build_reference_model(case)
    model.train()
    feats = model.encode_image_for_stage1(case["inputs"]["images"])
    assert all(m.training for m in model.modules())
    assert not feats.requires_grad
    assert_close(feats, case["outputs"]["get_image_features"], "get_image_features")


def test_text_features_survive_a_checkpoint(case):
    model = build_reference_model(case)
    assert not model.has_text_features()
    model.set_text_features(case["outputs"]["stage2_text_features_all_classes"])
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = CLIPReID(reference_cfg(case))
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.has_text_features()
    assert torch.equal(fresh.text_head.text_features, case["outputs"]["stage2_text_features_all_classes"])
    # The stage-1 prompts travel too (the reference saves cls_ctx and the token buffers).
    assert torch.equal(fresh.text_head.prompt_learner.cls_ctx, case["state_dict"]["prompt_learner.cls_ctx"])


def test_stage2_without_text_features_says_what_to_do(case):
    model = build_reference_model(case)
    model.train()
    batch = {"images": case["inputs"]["images"][:2], "targets": case["inputs"]["labels"][:2]}
    with pytest.raises(ConfigError, match="stage 1"):
        model(batch)


def test_evaluation_only_model_has_no_text_side(case):
    cfg = reference_cfg(case)
    cfg.MODEL.HEADS.NUM_CLASSES = 0
    model = CLIPReID(cfg).eval()
    assert model.text_head is None and not model.has_text_features()
    with torch.no_grad():
        emb = model({"images": case["inputs"]["images"][:1]})
    assert_close(emb, case["outputs"]["eval_feat_neck_before"][:1], "eval embedding")
    with pytest.raises(ConfigError, match="NUM_CLASSES"):
        model.compute_all_text_features()


def test_non_clip_backbone_gets_a_projection_into_text_space(reference_dir):
    import os

    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.BACKBONE.CLIP.MODEL_NAME = ""
    cfg.MODEL.PROMPT.TEXT_WEIGHTS = os.path.join(reference_dir, "tiny_clip_vit_openai_format.pt")
    cfg.MODEL.PROMPT.CLASS_WORD = "vehicle"
    cfg.INPUT.SIZE_TRAIN = [64, 32]
    cfg.MODEL.HEADS.NUM_CLASSES = 3
    cfg.MODEL.LOSSES.NAMES = ("CrossEntropyLoss", "TripletLoss", "ImageTextCrossEntropyLoss")
    model = CLIPReID(cfg)
    assert model.text_head.prompt_text == "A photo of a X X X X vehicle."
    images = torch.randn(4, 3, 64, 32)
    labels = torch.tensor([0, 0, 2, 2])
    for p in model.stage1_parameters():
        p.requires_grad_(True)
    feats = model.encode_image_for_stage1(images)
    assert feats.shape == (4, 32)  # the tiny CLIP's embedding width
    sum(model.stage1_losses(feats, labels).values()).backward()
    assert model.text_head.prompt_learner.cls_ctx.grad is not None
    for p in model.stage1_parameters():
        p.requires_grad_(False)
    model.freeze_text_features(batch_size=2)
    model.train()
    losses = model({"images": images, "targets": labels})
    assert set(losses) == {"loss_cls", "loss_triplet", "loss_i2t"}
    sum(losses.values()).backward()
    assert model.image_proj.weight.grad is not None  # the projection learns from the text loss
    model.eval()
    with torch.no_grad():
        assert model({"images": images}).shape == (4, 512 + 32)
