"""Loading checkpoints of the reference implementation: key mapping, prefixes, explained mismatches.

The checkpoints are written here from tiny models of this toolkit with the reference's names
(reference_layout.py, transcribed from CLIPREID_SPEC.md section 7); loading the shared
reference checkpoint itself is in reference/ (test_clip_baseline_parity.py and the e2e test).
"""

import pytest
import torch

from clipreid_plugin.plugins.clipreid import convert_reference_state_dict, is_reference_state_dict
from clipreid_plugin.plugins.clipreid.clip_baseline import CLIPBaseline
from clipreid_plugin.plugins.clipreid.clipreid import CLIPReID
from clipreid_plugin.utils.checkpoint import CheckpointError, load_model_weights

from reference_layout import reference_state_dict
from tiny_clip import tiny_clip_cfg

NUM_CLASSES = 7
TEXT_FEATURE_BUFFERS = {"text_head.text_features", "text_head.text_features_ready"}


def _cfg(meta_arch="CLIPBaseline", **clip_keys):
    return tiny_clip_cfg("vit", meta_arch, NUM_CLASSES, **clip_keys)


def _trained_looking(model, seed):
    """Every tensor of ``model`` set to seeded random values (BN statistics included), so that a
    tensor that is not copied on loading shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * 0.02)
    return model


@pytest.fixture(scope="module")
def baseline_sd():
    """A CLIP baseline checkpoint in the reference's format (what its train.py saves)."""
    return reference_state_dict(_trained_looking(CLIPBaseline(_cfg()), 1).state_dict())


def test_detects_reference_format(baseline_sd):
    """The reference's ``image_encoder.*`` keys mark its format, with or without DataParallel's prefix."""
    assert is_reference_state_dict(baseline_sd)
    assert is_reference_state_dict({"module." + k: v for k, v in baseline_sd.items()})
    assert not is_reference_state_dict(CLIPBaseline(_cfg()).state_dict())


def test_dataparallel_prefix_and_exact_copy(baseline_sd):
    """Every reference key finds its tensor (names spelled out for the heads), the ``module.``
    prefix is removed, and every tensor is copied exactly."""
    model = CLIPBaseline(_cfg())
    new_sd, unmatched = convert_reference_state_dict({"module." + k: v for k, v in baseline_sd.items()}, model)
    assert unmatched == []
    assert set(new_sd) == set(model.state_dict())
    assert torch.equal(new_sd["backbone.visual.positional_embedding"], baseline_sd["image_encoder.positional_embedding"])
    assert torch.equal(new_sd["backbone.visual.transformer.resblocks.3.mlp.c_fc.weight"],
                       baseline_sd["image_encoder.transformer.resblocks.3.mlp.c_fc.weight"])
    assert torch.equal(new_sd["neck.classifier.weight"], baseline_sd["classifier.weight"])
    assert torch.equal(new_sd["neck_proj.classifier.weight"], baseline_sd["classifier_proj.weight"])
    assert torch.equal(new_sd["neck.bn.running_var"], baseline_sd["bottleneck.running_var"])
    assert torch.equal(new_sd["neck_proj.bn.weight"], baseline_sd["bottleneck_proj.weight"])
    model.load_state_dict(new_sd)
    assert all(torch.equal(v, baseline_sd[k]) for k, v in reference_state_dict(model.state_dict()).items())


def test_clipreid_checkpoint_in_baseline_and_clipreid():
    """A CLIP-ReID checkpoint: the baseline takes its image side and leaves exactly the text side
    (``prompt_learner.*``, ``text_encoder.*``) unmatched; CLIPReID takes everything, and only the
    stage-2 text features (which the reference does not save) stay missing."""
    sd = reference_state_dict(_trained_looking(CLIPReID(_cfg("CLIPReID")), 2).state_dict())
    text_keys = {k for k in sd if k.startswith(("prompt_learner.", "text_encoder."))}
    assert {"prompt_learner.cls_ctx", "prompt_learner.token_prefix", "text_encoder.text_projection"} <= text_keys
    _, unmatched = convert_reference_state_dict(sd, CLIPBaseline(_cfg()))
    assert set(unmatched) == text_keys
    model = CLIPReID(_cfg("CLIPReID"))
    new_sd, unmatched = convert_reference_state_dict(sd, model)
    assert unmatched == []
    assert set(model.load_state_dict(new_sd, strict=False).missing_keys) == TEXT_FEATURE_BUFFERS
    assert torch.equal(model.text_head.prompt_learner.cls_ctx, sd["prompt_learner.cls_ctx"])


def test_model_zoo_file_loads_through_model_weights(tmp_path):
    """A model-zoo file (plain state dict saved under DataParallel) loads wherever the toolkit
    loads weights (MODEL.WEIGHTS): converted, every tensor filled. The text-feature buffers (which
    the reference never saves) keep the model's own "not computed" state, so they are neither
    missing (a full load needs no MODEL.ALLOW_PARTIAL_WEIGHTS) nor marked ready."""
    sd = reference_state_dict(_trained_looking(CLIPReID(_cfg("CLIPReID")), 3).state_dict())
    path = tmp_path / "ViT-B-16_60.pth"
    torch.save({"module." + k: v for k, v in sd.items()}, path)
    model = CLIPReID(_cfg("CLIPReID"))
    report = load_model_weights(model, str(path))
    assert report["missing"] == []
    assert int(model.text_head.text_features_ready) == 0
    assert report["unexpected"] == [] and report["mismatched"] == []
    assert all(torch.equal(v, sd[k]) for k, v in reference_state_dict(model.state_dict()).items())


def test_sie_table_unmatched_without_sie(baseline_sd):
    """``cv_embed`` has no place in a model without SIE: reported unmatched."""
    sd = dict(baseline_sd, cv_embed=torch.zeros(3, 128))
    _, unmatched = convert_reference_state_dict(sd, CLIPBaseline(_cfg()))
    assert unmatched == ["cv_embed"]


def test_sie_table_mapped_with_sie(baseline_sd):
    """With camera SIE, ``cv_embed`` goes to the backbone's SIE table."""
    model = CLIPBaseline(_cfg(SIE_CAMERA=True, NUM_CAMERAS=3))
    table = torch.randn(3, 128)
    new_sd, unmatched = convert_reference_state_dict(dict(baseline_sd, cv_embed=table), model)
    assert unmatched == [] and torch.equal(new_sd["backbone.cv_embed"], table)


@pytest.mark.parametrize("change, key, cause", [
    (("MODEL.HEADS.NUM_CLASSES", 9), "classifier.weight", "number of classes"),
    (("CLIPREID.BACKBONE.STRIDE_SIZE", [12, 12]), "image_encoder.positional_embedding", "stride"),
])
def test_shape_mismatch_is_explained(baseline_sd, change, key, cause):
    """A shape that does not fit names the key, both shapes and the likely cause."""
    cfg = _cfg()
    cfg.merge_from_list([change[0], str(change[1])])
    with pytest.raises(CheckpointError, match=rf"'{key}' has shape .* but .* has .*{cause}"):
        convert_reference_state_dict(baseline_sd, CLIPBaseline(cfg))


def test_model_without_key_map_is_refused():
    """A model that declares no REFERENCE_KEY_MAP cannot take a reference checkpoint: said so."""
    with pytest.raises(CheckpointError, match="REFERENCE_KEY_MAP"):
        convert_reference_state_dict({"image_encoder.proj": torch.zeros(1)}, torch.nn.Linear(1, 1))
