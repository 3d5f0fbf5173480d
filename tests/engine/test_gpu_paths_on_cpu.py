"""The logic of every GPU path, checked on the CPU: mixed precision that cannot poison the losses,
the fused attention kernel, torch.compile, channels-last, fused optimizers, extraction precision."""

import pytest
import torch
import torch.nn.functional as F

from clipreid_plugin.engine import OptimizationStep
from clipreid_plugin.modeling.losses import triplet_loss, cross_entropy_label_smooth
from clipreid_plugin.plugins.clipreid.losses import supcon_loss

from collect_outputs import CollectOutputs

HALF = [torch.float16, torch.bfloat16]


def _batch_with_duplicates(std: float, seed: int = 0):
    """64 x 768 features of 16 identities x 4 images, where each identity's first two images are
    identical (zero distance off the diagonal too), at feature scale ``std``."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(64, 768, generator=g, dtype=torch.float64) * std
    feats[1::4] = feats[0::4]
    return feats.float().requires_grad_(True), torch.arange(16).repeat_interleave(4)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("std", [1.0, 10.0])
def test_triplet_loss_is_fp32_exact_and_finite_under_autocast(dtype, std):
    feats, ids = _batch_with_duplicates(std)
    plain = triplet_loss(feats, ids, 0.3)
    (g_plain,) = torch.autograd.grad(plain, feats)
    with torch.autocast("cpu", dtype=dtype):
        mixed = triplet_loss(feats, ids, 0.3)
    (g_mixed,) = torch.autograd.grad(mixed, feats)
    # computed in fp32 whatever the autocast state: the very same number, finite gradients
    assert mixed.dtype == torch.float32 and mixed.item() == plain.item()
    assert torch.isfinite(g_mixed).all() and torch.equal(g_mixed, g_plain)
    # the reference's recipe keeps |x|^2 + |y|^2 in fp32: check against a float64 computation
    f64 = feats.detach().double()
    d = torch.cdist(f64, f64)
    same = ids[:, None] == ids[None, :]
    expected = F.relu(d.masked_fill(~same, -1).amax(1) - d.masked_fill(same, float("inf")).amin(1) + 0.3).mean()
    assert abs(plain.item() - expected.item()) <= 1e-5 * max(1.0, expected.item())


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_features_are_upcast_before_the_loss(dtype):
    feats, ids = _batch_with_duplicates(10.0)
    half = feats.detach().to(dtype).requires_grad_(True)
    loss = triplet_loss(half, ids, 0.3)
    (grad,) = torch.autograd.grad(loss, half)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(grad).all()
    assert loss.item() == triplet_loss(half.detach().float(), ids, 0.3).item()


@pytest.mark.parametrize("dtype", HALF)
def test_cross_entropy_and_image_text_losses_are_fp32_under_autocast(dtype):
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(8, 751, generator=g) * 30).requires_grad_(True)
    targets = torch.randint(0, 751, (8,), generator=g)
    image, text = torch.randn(8, 512, generator=g) * 5, torch.randn(8, 512, generator=g) * 5
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    with torch.autocast("cpu", dtype=dtype):
        ce = cross_entropy_label_smooth(logits, targets, 0.1)
        i2t = supcon_loss(image, text, labels, labels)
    assert ce.dtype == i2t.dtype == torch.float32
    assert ce.item() == cross_entropy_label_smooth(logits, targets, 0.1).item()
    assert i2t.item() == supcon_loss(image, text, labels, labels).item()
    # by hand: log-sum-exp in float64
    lp = torch.log_softmax(logits.detach().double(), 1)
    q = torch.full_like(lp, 0.1 / 751)
    q[torch.arange(8), targets] += 0.9
    assert abs(ce.item() - (-(q * lp).sum(1).mean()).item()) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_step_updates_with_finite_values(dtype):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = OptimizationStep(opt, clip_grad_norm=1.0, amp_dtype=dtype, device_type="cpu")
    x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
    before = [p.detach().clone() for p in model.parameters()]
    losses, grad_norm = step(lambda: {"loss_cls": cross_entropy_label_smooth(model(x), y, 0.1)})
    assert losses["loss_cls"].dtype == torch.float32 and torch.isfinite(losses["loss_cls"])
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert (step.grad_scaler is not None) == (dtype == torch.float16) and (grad_norm is None) == (dtype == torch.float16)
    assert ("grad_scaler" in step.state_dict()) == (dtype == torch.float16)


def _tiny_clip_vit():
    from clipreid_plugin.plugins.clipreid.backbone import CLIPImageEncoder
    from clipreid_plugin.plugins.clipreid.clip_weights import load_clip

    clip = load_clip("ReID-Tiny-ViT-16")
    return clip, CLIPImageEncoder(clip.visual, (64, 32))


def test_clip_towers_train_through_fused_attention():
    """open_clip's attention (nn.MultiheadAttention with need_weights=False) reaches the fused
    scaled_dot_product_attention kernel in the image tower and in the causal text tower."""
    from clipreid_plugin.plugins.clipreid.prompt_learner import TextEncoder

    clip, encoder = _tiny_clip_vit()
    text = TextEncoder(clip)
    encoder.train()
    with torch.profiler.profile() as prof:
        encoder(torch.randn(2, 3, 64, 32)).projected.sum().backward()
        text(torch.randn(2, 77, 64), eot_index=11).sum().backward()
    ops = {e.key for e in prof.key_averages()}
    assert "aten::scaled_dot_product_attention" in ops
    assert any(op.startswith("aten::_scaled_dot_product") for op in ops)  # a fused kernel ran


def test_compiled_model_trains_like_the_eager_one(tmp_path):
    from toy_engine import ToyTrainer, toy_cfg

    eager = ToyTrainer(toy_cfg(tmp_path / "eager"))
    eager.resume_or_load(resume=False)
    eager.train()
    compiled = ToyTrainer(toy_cfg(tmp_path / "compiled", **{"MODEL.COMPILE": "default",
                                                            "MODEL.COMPILE_BACKEND": "aot_eager"}))
    assert type(compiled.model).__name__ == "OptimizedModule"
    compiled.resume_or_load(resume=False)
    compiled.train()
    saved = torch.load(tmp_path / "compiled" / "model_final.pth", weights_only=True)["model"]
    reference = torch.load(tmp_path / "eager" / "model_final.pth", weights_only=True)["model"]
    assert saved.keys() == reference.keys()  # no "_orig_mod." prefix in checkpoints
    for k in reference:
        torch.testing.assert_close(saved[k], reference[k], rtol=1e-5, atol=1e-6)


def test_channels_last_backbone_gives_the_same_features():
    from clipreid_plugin.config import get_cfg
    from clipreid_plugin.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.HEADS.NUM_CLASSES", 3,
                         "MODEL.BACKBONE.PRETRAIN", False])
    torch.manual_seed(0)
    plain = build_model(cfg).eval()
    cfg.MODEL.CHANNELS_LAST = "on"
    torch.manual_seed(0)
    fast = build_model(cfg).eval()
    assert fast.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = {"images": torch.randn(2, 3, 64, 32)}
    with torch.no_grad():
        torch.testing.assert_close(fast(batch), plain(batch), rtol=1e-4, atol=1e-5)


def test_bfloat16_extraction_returns_fp32_embeddings_close_to_fp32():
    from clipreid_plugin.evaluation import inference_on_dataset

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8))
    wrapped = _BatchModel(model)
    loader = [{"images": torch.randn(4, 3, 2, 2)} for _ in range(3)]
    fp32 = inference_on_dataset(wrapped, loader, CollectOutputs())
    bf16 = inference_on_dataset(wrapped, loader, CollectOutputs(), amp_dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    torch.testing.assert_close(bf16, fp32, rtol=2e-2, atol=2e-2)


class _BatchModel(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, batch):
        return self.net(batch["images"])


def test_determinism_switch_sets_the_backend_flags():
    from clipreid_plugin.utils.seeding import set_determinism

    try:
        set_determinism(True, True)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()
        set_determinism(False, True)
        assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        set_determinism(False, False)
