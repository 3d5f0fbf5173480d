"""Loading the reference implementation's checkpoints: key mapping, prefixes, explained mismatches."""

import pytest
import torch

from clipreid_plugin.plugins.clipreid import convert_reference_state_dict, is_reference_state_dict
from clipreid_plugin.utils.checkpoint import CheckpointError
from clipreid_plugin.plugins.clipreid.clip_baseline import CLIPBaseline


def test_detects_reference_format(vit_case, case_model):
    model, _ = case_model(vit_case)
    assert is_reference_state_dict(vit_case["state_dict"])
    assert is_reference_state_dict({"module." + k: v for k, v in vit_case["state_dict"].items()})
    assert not is_reference_state_dict(model.state_dict())


def test_dataparallel_prefix_and_exact_copy(vit_case, case_model):
    model, _ = case_model(vit_case)
    sd = vit_case["state_dict"]
    new_sd, unmatched = convert_reference_state_dict({"module." + k: v for k, v in sd.items()}, model)
    assert not any(k.startswith("module.") for k in unmatched)
    # the reference's names, one by one (spec section 7) -> this model's
    assert torch.equal(new_sd["backbone.visual.positional_embedding"], sd["image_encoder.positional_embedding"])
    assert torch.equal(new_sd["neck.classifier.weight"], sd["classifier.weight"])
    assert torch.equal(new_sd["neck_proj.classifier.weight"], sd["classifier_proj.weight"])
    assert torch.equal(new_sd["neck.bn.running_var"], sd["bottleneck.running_var"])
    assert torch.equal(new_sd["neck_proj.bn.weight"], sd["bottleneck_proj.weight"])
    assert set(new_sd) == set(model.state_dict())


def test_sie_table_unmatched_without_sie(vit_case, case_model):
    model, _ = case_model(vit_case)
    sd = dict(vit_case["state_dict"], cv_embed=torch.zeros(3, 128))
    _, unmatched = convert_reference_state_dict(sd, model)
    assert "cv_embed" in unmatched


def test_sie_table_mapped_with_sie(vit_case, make_case_cfg):
    cfg = make_case_cfg(vit_case)
    cfg.MODEL.BACKBONE.CLIP.SIE_CAMERA = True
    model = CLIPBaseline(cfg)
    table = torch.randn(3, 128)
    new_sd, unmatched = convert_reference_state_dict(dict(vit_case["state_dict"], cv_embed=table), model)
    assert "cv_embed" not in unmatched and torch.equal(new_sd["backbone.cv_embed"], table)


@pytest.mark.parametrize("change, key, cause", [
    (("MODEL.HEADS.NUM_CLASSES", 9), "classifier.weight", "number of classes"),
    (("MODEL.BACKBONE.CLIP.STRIDE_SIZE", [12, 12]), "image_encoder.positional_embedding", "stride"),
])
def test_shape_mismatch_is_explained(vit_case, make_case_cfg, change, key, cause):
    cfg = make_case_cfg(vit_case)
    cfg.merge_from_list([change[0], str(change[1])])
    model = CLIPBaseline(cfg)
    with pytest.raises(CheckpointError, match=rf"'{key}' has shape .* but .* has .*{cause}"):
        convert_reference_state_dict(vit_case["state_dict"], model)


def test_model_without_key_map_is_refused():
    with pytest.raises(CheckpointError, match="REFERENCE_KEY_MAP"):
        convert_reference_state_dict({"image_encoder.proj": torch.zeros(1)}, torch.nn.Linear(1, 1))
