"""fast-reid model-zoo files through MODEL.WEIGHTS: names, and one-line errors for another backbone."""

import pytest
import torch
from torch import nn

from clipreid_plugin.modeling.backbones import build_resnest_backbone, build_resnet_backbone
from clipreid_plugin.modeling.fastreid_checkpoint import convert_fastreid_checkpoint, convert_fastreid_state_dict, \
    fastreid_key_rules, to_model_key
from clipreid_plugin.utils.checkpoint import CheckpointError, load_model_weights


class _Model(nn.Module):
    """A backbone under fast-reid's attribute name, and a head of another toolkit's names."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def _meta_model(**arch):
    with torch.device("meta"):  # shapes only: nothing is allocated
        builder = build_resnest_backbone if arch.pop("resnest", False) else build_resnet_backbone
        return _Model(builder(**arch))


def _fastreid_sd(**arch):
    """A fast-reid-named state dict (meta tensors): the backbone of ``arch`` plus a BoT head."""
    sd = {f"backbone.{k}": v for k, v in _meta_model(**arch).backbone.state_dict().items()}
    sd.update({"heads.weight": torch.empty(751, 2048, device="meta"),
               "heads.bottleneck.0.weight": torch.empty(2048, device="meta")})
    return sd


@pytest.mark.parametrize("theirs, ours, advice", [
    (dict(depth="50x", with_ibn=True), dict(depth="50x"), "WITH_IBN True"),
    (dict(depth="50x"), dict(depth="50x", with_ibn=True), "WITH_IBN False"),
    (dict(depth="50x", with_nl=True), dict(depth="50x"), "WITH_NL True"),
    (dict(depth="50x", with_nl=True), dict(depth="50x", with_nl=True, nl_half_channels=True), "NL_HALF_CHANNELS False"),
    (dict(depth="50x", with_se=True), dict(depth="50x"), "WITH_SE True"),
    (dict(depth="101x"), dict(depth="50x"), "(3, 4, 23, 3) blocks, the model's (3, 4, 6, 3): set MODEL.BACKBONE.DEPTH"),
    (dict(depth="34x"), dict(depth="50x"), "its blocks are basic blocks, the model's bottleneck"),
    (dict(depth="50x_32x4d"), dict(depth="50x"), "block widths differ (backbone.layer1.0.bn1.bias: (128,) in the file vs (64,))"),
    (dict(resnest=True), dict(depth="50x"), "NAME build_resnest_backbone"),
    (dict(depth="50x"), dict(resnest=True), "NAME build_resnet_backbone"),
])
def test_another_backbone_is_a_one_line_error_naming_the_key(theirs, ours, advice):
    with pytest.raises(CheckpointError) as e:
        convert_fastreid_state_dict(_fastreid_sd(**theirs), _meta_model(**ours))
    assert advice in str(e.value) and "\n" not in str(e.value)


def test_ibn_nl_checkpoint_fits_the_same_config():
    new_sd, unmatched = convert_fastreid_state_dict(_fastreid_sd(depth="50x", with_ibn=True, with_nl=True),
                                                    _meta_model(depth="50x", with_ibn=True, with_nl=True))
    assert sorted(unmatched) == ["heads.bottleneck.0.weight", "heads.weight"]
    assert "backbone.NL_3.2.W.1.running_var" in new_sd and "backbone.layer3.5.bn1.IN.weight" in new_sd


def test_key_maps_compose_outer_modules_first():
    """A meta-architecture moves a fast-reid sub-tree; the moved module's own map applies next."""

    class Head(nn.Module):
        FASTREID_KEY_MAP = (("weight", "classifier.weight"), ("bottleneck.0.", "bn."))

        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(4)
            self.classifier = nn.Linear(4, 3, bias=False)

    class Arch(nn.Module):
        FASTREID_KEY_MAP = (("b1_head.", "heads.b1."),)

        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleDict({"b1": Head()})

    rules = fastreid_key_rules(Arch())
    assert to_model_key(rules, "b1_head.weight") == "heads.b1.classifier.weight"
    assert to_model_key(rules, "b1_head.bottleneck.0.running_mean") == "heads.b1.bn.running_mean"
    assert to_model_key(rules, "b1_head.weight_extra") == "heads.b1.weight_extra"  # exact names stay exact
    assert to_model_key(rules, "backbone.conv1.weight") == "backbone.conv1.weight"
    sd = {"b1_head.weight": torch.ones(3, 4), "b1_head.bottleneck.0.weight": torch.full((4,), 2.0)}
    converted, fmt, unmatched = convert_fastreid_checkpoint(sd, Arch())
    assert fmt == "fast-reid" and unmatched == []
    assert torch.equal(converted["heads.b1.classifier.weight"], torch.ones(3, 4))
    assert convert_fastreid_checkpoint({"backbone.conv1.weight": torch.ones(1)}, Arch()) is None  # not fast-reid's


def test_model_zoo_file_loads_through_model_weights(tmp_path):
    """fast-reid's checkpoint layout ({"model", "optimizer", "scheduler", "iteration"}) through load_model_weights."""
    torch.manual_seed(0)
    theirs = build_resnet_backbone(depth="18x", with_ibn=True)
    sd = {f"backbone.{k}": v for k, v in theirs.state_dict().items()}
    sd.update({"heads.weight": torch.randn(5, 512), "pixel_mean": torch.zeros(1, 3, 1, 1)})
    path = tmp_path / "market_bot_R18-ibn.pth"
    torch.save({"model": sd, "optimizer": {}, "scheduler": {}, "iteration": 7}, path)

    model = _Model(build_resnet_backbone(depth="18x", with_ibn=True))
    report = load_model_weights(model, str(path), allow_partial=False)
    assert report["missing"] == [] and sorted(report["unexpected"]) == ["heads.weight", "pixel_mean"]
    torch.testing.assert_close(model.backbone.layer2[1].bn1.IN.weight, theirs.layer2[1].bn1.IN.weight, rtol=0, atol=0)

    with pytest.raises(CheckpointError, match=r"has IBN-a layers .*: set MODEL.BACKBONE.WITH_IBN True"):
        load_model_weights(_Model(build_resnet_backbone(depth="18x")), str(path), allow_partial=True)
