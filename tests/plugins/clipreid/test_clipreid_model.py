"""CLIPReID's training contract on a tiny CLIP built locally: which parameters each stage trains,
the stage-1 image features, the stage-2 losses on the frozen text features, the text features in
checkpoints, error messages, evaluation-only models and a non-CLIP image backbone.

Parity with the reference implementation's tensors is in reference/test_clipreid_parity.py.
"""

import copy
import io

import numpy as np
import pytest
import torch

from clipreid_plugin.config import ConfigError
from clipreid_plugin.plugins.clipreid.clipreid import CLIPReID
from clipreid_plugin.solver import build_optimizer

from tiny_clip import SIZE, WIDTHS, max_err, random_batch, tiny_clip_cfg

NUM_CLASSES = 7
TOL = 1e-5


def _cfg(kind="vit", **clip_keys):
    """CLIPReID with the reference's stage-2 losses (as projects/CLIPReID/configs/Base-CLIPReID.yml)."""
    cfg = tiny_clip_cfg(kind, "CLIPReID", NUM_CLASSES, **clip_keys)
    cfg.MODEL.LOSSES.NAMES = ("CrossEntropyLoss", "TripletLoss", "ImageTextCrossEntropyLoss")
    return cfg


@pytest.fixture(scope="module")
def vit_model():
    """A random tiny-ViT CLIPReID, built once (tests deep-copy it before changing it)."""
    torch.manual_seed(0)
    return CLIPReID(_cfg())


def test_stage2_trains_the_image_side_only(vit_model):
    """Stage 2 (the trainer's optimizer over the model as built) trains every backbone tensor and
    the BNNeck weights and classifiers, never the BNNeck biases or the text side; each in one group.

    Tiny ViT: class_embedding, positional_embedding, proj, conv1.weight, ln_pre and ln_post
    (weight, bias) = 8 tensors, plus 4 blocks x 12 (ln_1, ln_2, attn in_proj, attn out_proj,
    mlp c_fc, mlp c_proj: weight and bias each) = 48; 56 + 4 neck tensors = 60.
    """
    model = copy.deepcopy(vit_model)
    expected = {f"backbone.{n}" for n, _ in model.backbone.named_parameters()} | {
        "neck.bn.weight", "neck.classifier.weight", "neck_proj.bn.weight", "neck_proj.classifier.weight"}
    assert len(expected) == 60
    assert {"backbone.visual.conv1.weight", "backbone.visual.proj", "backbone.visual.class_embedding",
            "backbone.visual.transformer.resblocks.3.mlp.c_proj.bias"} <= expected
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    groups = build_optimizer(tiny_clip_cfg(), model).param_groups
    names = [n for g in groups for n in g["names"]]  # groups of equal hyperparameters, merged
    assert sorted(names) == sorted(expected)
    assert all(len(g["params"]) == len(g["names"]) for g in groups)


def test_stage1_trains_only_cls_ctx(vit_model):
    """Stage 1 optimises cls_ctx alone: it is the only stage-1 parameter, and a stage-1 backward
    leaves every other tensor without a gradient."""
    model = copy.deepcopy(vit_model)
    assert not any(p.requires_grad for p in model.text_head.parameters())  # frozen until stage 1
    assert model.stage1_parameters() == [model.text_head.prompt_learner.cls_ctx]
    for p in model.parameters():
        p.requires_grad_(False)
    model.text_head.prompt_learner.cls_ctx.requires_grad_(True)  # what the stage-1 hook does
    image_features = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    losses = model.stage1_losses(image_features, torch.tensor([1, 1, 4, 4]))
    assert set(losses) == {"loss_supcon_i2t", "loss_supcon_t2i"}
    sum(losses.values()).backward()
    grad = model.text_head.prompt_learner.cls_ctx.grad
    assert grad[[1, 4]].abs().sum() > 0 and grad[[0, 2, 3, 5, 6]].abs().max() == 0
    assert all(p.grad is None for n, p in model.named_parameters() if n != "text_head.prompt_learner.cls_ctx")


def test_stage1_loss_listed_twice_names_its_key(vit_model):
    """Stage-1 losses go through the host's apply_losses: a duplicate is an error naming the stage-1 key."""
    model = copy.deepcopy(vit_model)
    model.stage1_loss_modules.append(copy.deepcopy(model.stage1_loss_modules[0]))
    with pytest.raises(ConfigError, match=r"Two losses in CLIPREID.STAGE1.LOSS_NAMES both return 'loss_supcon_i2t'"):
        model.stage1_losses(torch.randn(4, 64), torch.tensor([1, 1, 4, 4]))


@pytest.mark.parametrize("kind", ["vit", "rn"])
def test_stage1_extraction_restores_modes_and_ignores_sie(kind):
    """Stage-1 features are the projected feature of the backbone in eval mode (RN: BN running
    statistics) without SIE, computed without gradient; the model's modes are restored."""
    torch.manual_seed(0)
    model = CLIPReID(_cfg(kind, SIE_CAMERA=True, NUM_CAMERAS=2) if kind == "vit" else _cfg(kind))
    images = random_batch(4)["images"]
    with torch.no_grad():
        expected = copy.deepcopy(model.backbone).eval()(images).projected  # no camera ids: no SIE
    model.train()
    feats = model.encode_image_for_stage1(images)
    assert all(m.training for m in model.modules())
    assert not feats.requires_grad and feats.shape == (4, 64)
    assert max_err(feats, expected) <= 1e-6


def _smoothed_ce_float64(logits: np.ndarray, targets: np.ndarray, eps: float = 0.1) -> float:
    """Label-smoothed cross-entropy written as lse - (1 - eps) z_y - eps mean_k z_k per row (the
    same quantity as -sum_k q_k log softmax_k, since sum_k q_k = 1), batch mean, in float64."""
    top = logits.max(1, keepdims=True)
    lse = (top + np.log(np.exp(logits - top).sum(1, keepdims=True)))[:, 0]
    z_y = logits[np.arange(len(targets)), targets]
    return float(np.mean(lse - (1 - eps) * z_y - eps * logits.mean(1)))


def test_stage2_losses_use_the_frozen_text_features(vit_model):
    """Stage 2 adds i2t_logits = feat_proj @ text_features.T (spec 3.3) and the label-smoothed
    cross-entropy on them (spec 3.1, q = 0.9 onehot + 0.1 / C), checked two ways: by hand, zero text
    features give logits 0 and a loss of log C = log 7 = 1.945910; random text features against a
    float64 NumPy computation (an explicit sum over the feature axis, the smoothed loss in its
    log-sum-exp form)."""
    model = copy.deepcopy(vit_model).train()
    batch = random_batch()
    model.set_text_features(torch.zeros(NUM_CLASSES, 64))
    out = model.extract_features(batch["images"])
    losses = model.compute_losses(out, batch["targets"])
    assert set(losses) == {"loss_cls", "loss_triplet", "loss_i2t"}
    assert torch.equal(out["i2t_logits"], torch.zeros(len(batch["targets"]), NUM_CLASSES))
    assert losses["loss_i2t"].item() == pytest.approx(1.945910, abs=1e-6)

    text = torch.randn(NUM_CLASSES, 64, generator=torch.Generator().manual_seed(3))
    model.set_text_features(text)
    out = model.extract_features(batch["images"])
    losses = model.compute_losses(out, batch["targets"])
    feat, t = out["feat_proj"].detach().double().numpy(), text.double().numpy()
    logits = (feat[:, None, :] * t[None, :, :]).sum(-1)  # (B, C): every image against every class text
    assert np.abs(out["i2t_logits"].detach().double().numpy() - logits).max() <= TOL
    expected = _smoothed_ce_float64(logits, batch["targets"].numpy())
    assert abs(losses["loss_i2t"].item() - expected) <= TOL


def test_stage2_logits_are_fp32_under_bf16_autocast(vit_model):
    """Under bf16 autocast the image-to-text logits are those of the fp32 product of the same
    (bf16-computed) projected features with the text features, not a bf16 product."""
    model = copy.deepcopy(vit_model).train()
    text = torch.randn(NUM_CLASSES, 64, generator=torch.Generator().manual_seed(3))
    model.set_text_features(text)
    batch = random_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.extract_features(batch["images"])
        model.compute_losses(out, batch["targets"])
    expected = out["feat_proj"].double() @ text.double().t()
    bf16_product = (out["feat_proj"].bfloat16() @ text.bfloat16().t()).double()
    assert out["i2t_logits"].dtype == torch.float32
    assert max_err(out["i2t_logits"], expected) <= 1e-5 * expected.abs().max()
    assert max_err(bf16_product, expected) > 1e-3 * expected.abs().max()  # what the test guards against


def test_text_features_survive_a_checkpoint(vit_model):
    """The stage-2 text features and the stage-1 prompts travel in the state dict: a fresh model
    loading it has them, and knows it."""
    model = copy.deepcopy(vit_model)
    assert not model.has_text_features()
    feats = torch.randn(NUM_CLASSES, 64)
    model.set_text_features(feats)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(99)
    fresh = CLIPReID(_cfg())
    assert not fresh.has_text_features()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.has_text_features()
    assert torch.equal(fresh.text_head.text_features, feats)
    assert torch.equal(fresh.text_head.prompt_learner.cls_ctx, model.text_head.prompt_learner.cls_ctx)


def test_stage2_without_text_features_says_what_to_do(vit_model):
    """A training step before stage 1 (no text features) says that stage 1 must run first."""
    model = copy.deepcopy(vit_model).train()
    with pytest.raises(ConfigError, match="stage 1"):
        model(random_batch(2))


def test_training_config_without_the_text_loss_is_warned_about(caplog):
    """A CLIPReID training config whose MODEL.LOSSES.NAMES lacks ImageTextCrossEntropyLoss (legal,
    an ablation) is warned about by the plugin's config check; with the loss it is silent."""
    from clipreid_plugin.plugins.clipreid.config import check_clipreid_config

    cfg = tiny_clip_cfg("vit", "CLIPReID", NUM_CLASSES)
    cfg.MODEL.LOSSES.NAMES = ("CrossEntropyLoss", "TripletLoss")
    with caplog.at_level("WARNING"):
        check_clipreid_config(cfg, True)
    assert "without the image-to-text loss" in caplog.text and "ImageTextCrossEntropyLoss" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        check_clipreid_config(_cfg(), True)
        check_clipreid_config(cfg, False)  # evaluation only: no losses involved
    assert "image-to-text" not in caplog.text


def test_evaluation_only_model_has_no_text_side():
    """NUM_CLASSES 0: no text side; the embedding is concat(feature, projected) of the backbone
    (NECK_FEAT "before"); asking for text features names the key."""
    cfg = tiny_clip_cfg("vit", "CLIPReID", 0)
    cfg.CLIPREID.NECK_FEAT = "before"
    model = CLIPReID(cfg).eval()
    assert model.text_head is None and not model.has_text_features()
    images = random_batch(2)["images"]
    with torch.no_grad():
        emb = model({"images": images})
        out = model.backbone(images)
    assert emb.shape == (2, sum(WIDTHS["vit"]))
    assert max_err(emb, torch.cat([out.feature, out.projected], 1)) <= 1e-6
    with pytest.raises(ConfigError, match="NUM_CLASSES"):
        model.compute_all_text_features()


def test_non_clip_backbone_gets_a_projection_into_text_space(openai_weights_file):
    """A torchvision ResNet-18 with the text tower of a CLIP file (CLIPREID.PROMPT.TEXT_WEIGHTS): a
    learned projection 512 -> 64 (the text width) joins them; both stages run; the projection
    learns from the image-to-text loss; the eval embedding is 512 + 64 wide."""
    cfg = tiny_clip_cfg("vit", "CLIPReID", 3)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    cfg.CLIPREID.BACKBONE.MODEL_NAME = ""
    cfg.CLIPREID.PROMPT.TEXT_WEIGHTS = openai_weights_file("vit")
    cfg.CLIPREID.PROMPT.CLASS_WORD = "vehicle"
    cfg.MODEL.LOSSES.NAMES = ("CrossEntropyLoss", "TripletLoss", "ImageTextCrossEntropyLoss")
    model = CLIPReID(cfg)
    assert model.text_head.prompt_text == "A photo of a X X X X vehicle."
    file_proj = torch.load(cfg.CLIPREID.PROMPT.TEXT_WEIGHTS, weights_only=True)["text_projection"]
    assert torch.equal(model.text_head.text_encoder.text_projection, file_proj.float())
    images = torch.randn(4, 3, *SIZE)
    labels = torch.tensor([0, 0, 2, 2])
    for p in model.stage1_parameters():
        p.requires_grad_(True)
    feats = model.encode_image_for_stage1(images)
    assert feats.shape == (4, 64)  # the tiny CLIP's embedding width
    sum(model.stage1_losses(feats, labels).values()).backward()
    assert model.text_head.prompt_learner.cls_ctx.grad is not None
    for p in model.stage1_parameters():
        p.requires_grad_(False)
    model.freeze_text_features(batch_size=2)
    model.train()
    losses = model({"images": images, "targets": labels})
    assert set(losses) == {"loss_cls", "loss_triplet", "loss_i2t"}
    # The projection learns from the text loss: the gradient of loss_i2t alone (ID and triplet
    # reach the projection too) against its closed form. With f the pooled feature, W the
    # projection, T the text features, z = f W^T T^T, P = softmax(z), Q = 0.9 onehot + 0.1 / C:
    # dL/dz = (P - Q) / B, so dL/dW = ((P - Q) / B T)^T F, computed in float64.
    out = model.extract_features(images)
    i2t = model.compute_losses(out, labels)["loss_i2t"]
    (grad,) = torch.autograd.grad(i2t, model.image_proj.weight)
    f, t = out["feat"].detach().double().numpy(), model.text_head.text_features.double().numpy()
    w = model.image_proj.weight.detach().double().numpy()
    z = f @ w.T @ t.T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = 0.9 * np.eye(3)[labels.numpy()] + 0.1 / 3
    expected = (((p - q) / len(labels)) @ t).T @ f
    assert np.abs(expected).max() > 1e-4  # a gradient worth comparing
    assert np.abs(grad.double().numpy() - expected).max() <= 1e-5 * np.abs(expected).max() + 1e-7
    model.eval()
    with torch.no_grad():
        assert model({"images": images}).shape == (4, 512 + 64)
