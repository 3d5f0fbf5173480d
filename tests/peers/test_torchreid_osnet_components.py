"""OSNet's pieces on their own: the backbone under other heads, TorchreidHead under another backbone,
the fixbase hook, AMSGrad, the loss-weight check and the torchreid checkpoint converter.

The checkpoint tests use torchreid's own tensor names and values: ``weights.shapes`` of the peer
cases (made by torchreid's ``state_dict()``) filled by ``peer_weights.py``, evaluated against the
features torchreid computed from them (skipped without ../shared).
"""

import importlib.util
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from clipreid_plugin.config import ConfigError, load_cfg
from clipreid_plugin.engine import FixBaseHook, build_evaluation_model, validate_config
from clipreid_plugin.engine.fixbase import open_specified_layers, resolve_open_layers, restore_requires_grad
from clipreid_plugin.modeling import build_model
from clipreid_plugin.modeling.backbones import build_osnet_backbone
from clipreid_plugin.modeling.heads import TorchreidHead
from clipreid_plugin.modeling.losses.loss_weights import check_listed_losses_have_weight
from clipreid_plugin.solver import build_optimizer
from clipreid_plugin.utils.checkpoint import CheckpointError, load_model_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OSNET = os.path.join(REPO, "configs", "Market1501", "osnet_x1_0.yml")
TINY = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.BACKBONE.DEPTH", "x0_25",
        "MODEL.HEADS.NUM_CLASSES", "4", "MODEL.HEADS.EMBEDDING_DIM", "32"]


def _cfg(*extra, base=OSNET):
    return load_cfg(base, TINY + list(extra))


def _batch(n=8, h=64, w=32, classes=4):
    torch.manual_seed(0)
    return {"images": torch.randn(n, 3, h, w), "targets": torch.arange(n) % classes}


# ---------------------------------------------------------------------------------------------
# backbone and head
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_ain", [False, True])
def test_backbone_feature_map_and_both_constructions(with_ain):
    cfg = _cfg("MODEL.BACKBONE.WITH_AIN", str(with_ain))
    from_cfg = build_osnet_backbone(cfg)
    plain = build_osnet_backbone(depth="x0_25", with_ain=with_ain)
    assert list(from_cfg.state_dict()) == list(plain.state_dict())
    out = plain.eval()(torch.randn(2, 3, 64, 32))
    assert out.feature.shape == (2, 128, 4, 2)  # x0.25 width, stride 16
    assert plain.describe() == ("OSNet-AIN x0.25" if with_ain else "OSNet x0.25")
    assert any(isinstance(m, nn.InstanceNorm2d) for m in plain.modules()) == with_ain


def test_unknown_width_is_one_line_config_error():
    with pytest.raises(ConfigError, match=r"DEPTH '50x' is not an OSNet width; valid .*x1_0, x0_75, x0_5, x0_25"):
        build_osnet_backbone(depth="50x")


def test_osnet_under_the_bnneck_head_and_torchreid_head_under_resnet():
    """OSNet's map goes to the BNNeck EmbeddingHead like any backbone; TorchreidHead pools any map."""
    for extra in (["MODEL.HEADS.NAME", "EmbeddingHead"],
                  ["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.DEPTH", "18x"]):
        cfg = _cfg(*extra, "MODEL.LOSSES.NAMES", "['CrossEntropyLoss', 'TripletLoss']")
        model = build_model(cfg).train()
        losses = model(_batch())
        sum(losses.values()).backward()
        assert set(losses) == {"loss_cls", "loss_triplet"} and all(torch.isfinite(v) for v in losses.values())
        feat = model.eval()(_batch())
        assert feat.shape == (8, model.heads.out_dim)


def test_torchreid_head_outputs_and_no_fc():
    head = TorchreidHead(in_dim=16, embedding_dim=8, num_classes=3).train()
    out = head(torch.randn(4, 16, 2, 2))
    assert out["feat"] is out["triplet_features"][0] and out["cls_outputs"][0].shape == (4, 3)
    assert head.classifier.bias is not None and [n for n, _ in head.named_children()] == ["fc", "classifier"]
    bare = TorchreidHead(in_dim=16, embedding_dim=0, num_classes=3).eval()
    x = torch.randn(4, 16, 2, 2)
    assert torch.equal(bare(x), x.mean(dim=(2, 3))) and bare.fc is None and bare.out_dim == 16


# ---------------------------------------------------------------------------------------------
# fixbase, AMSGrad, loss weights
# ---------------------------------------------------------------------------------------------
def test_open_specified_layers_freezes_all_but_the_open_ones_and_restores_flags():
    """Under fast-reid's EmbeddingHead (1x1-conv embedding, BNNeck with a frozen bias): open the
    embedding conv only; its ancestors keep training, its sibling BN and the backbone freeze."""
    model = build_model(_cfg("MODEL.HEADS.NAME", "EmbeddingHead")).train()
    frozen_on_purpose = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen_on_purpose == {"heads.bottleneck.1.bias"}  # the BNNeck's bias
    paths = resolve_open_layers(model, ["bottleneck.0"])
    assert paths == ["heads.bottleneck.0"]
    saved = open_specified_layers(model, paths)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["heads.bottleneck.0.weight"]
    assert model.training and model.heads.training and model.heads.bottleneck.training  # ancestors keep training
    assert not model.backbone.training and not model.heads.bottleneck[1].training
    restore_requires_grad(model, saved)
    assert model.backbone.training and model.heads.bottleneck[1].training
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen_on_purpose  # not torchreid's "all"
    with pytest.raises(ConfigError, match=r"MODEL.OPEN_LAYERS: no module of the model is named 'clasifier'"):
        resolve_open_layers(model, ["clasifier"])
    # fast-reid's classifier is the head's own parameter: it can be opened by name, the rest of the head stays shut
    open_specified_layers(model, resolve_open_layers(model, ["heads.weight"]))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["heads.weight"]
    assert model.heads.training and not model.heads.bottleneck.training


def test_fixbase_hook_follows_the_epoch():
    cfg = _cfg("SOLVER.FIXBASE_EPOCHS", "2")
    model = build_model(cfg).train()
    hook = FixBaseHook(cfg)
    assert (hook.fixbase_epochs, hook.open_layers) == (2, ["classifier"])
    hook.trainer = SimpleNamespace(model=model, epoch=0)
    for epoch, only_classifier in ((0, True), (1, True), (2, False), (3, False)):
        hook.trainer.epoch = epoch
        hook.before_epoch()
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert (trainable == {"heads.classifier.weight", "heads.classifier.bias"}) == only_classifier
        assert model.backbone.conv1.training != only_classifier
    resumed = FixBaseHook(fixbase_epochs=2, open_layers=["heads.classifier"])
    resumed.trainer = SimpleNamespace(model=model, epoch=1)  # a run resumed inside the fixbase epochs
    resumed.before_epoch()
    assert not model.heads.fc[1].training and not model.backbone.conv1.conv.weight.requires_grad
    resumed.after_train()
    assert all(p.requires_grad for p in model.parameters())


def test_amsgrad_is_one_adam_group_with_amsgrad():
    model = build_model(_cfg())
    opt = build_optimizer(_cfg(), model)
    assert type(opt) is torch.optim.Adam and len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert g["amsgrad"] and g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8
    assert (g["lr"], g["weight_decay"]) == (0.0015, 5e-4)
    assert g["names"] == [n for n, _ in model.named_parameters()]


def test_a_listed_loss_without_weight_is_a_config_error(tmp_path):
    """torchreid's default weight_x 0 silently drops the softmax term; here it stops the run."""
    cfg = _cfg("MODEL.LOSSES.NAMES", "['CrossEntropyLoss', 'TripletLoss']", "MODEL.LOSSES.CE.SCALE", "0.0",
               "DATASETS.ROOT_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=r"MODEL.LOSSES.CE.SCALE is 0 while CrossEntropyLoss is in "
                                          r"MODEL.LOSSES.NAMES: .* Remove CrossEntropyLoss"):
        validate_config(cfg, training=True)
    check_listed_losses_have_weight(cfg, training=False)  # evaluation never computes it
    check_listed_losses_have_weight(_cfg("MODEL.LOSSES.NAMES", "['TripletLoss']", "MODEL.LOSSES.CE.SCALE", "0.0"),
                                    training=True)  # torchreid's weight_x 0, written as what it does


# ---------------------------------------------------------------------------------------------
# torchreid checkpoints
# ---------------------------------------------------------------------------------------------
def _peer(reference_dir, name):
    path = os.path.join(reference_dir, "peers", name)
    if not os.path.isfile(path):
        pytest.skip(f"peer case {path} not found")
    spec = importlib.util.spec_from_file_location("peer_weights", os.path.join(reference_dir, "peers", "peer_weights.py"))
    pw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pw)
    case = torch.load(path, weights_only=True)
    values = pw.fill(case["weights"]["shapes"], case["weights"]["seed"])
    sd = {k: torch.from_numpy(v).float() if v.dtype.kind == "f" else torch.from_numpy(v) for k, v in values.items()}
    return case, sd


def _peer_cfg(case, *extra):
    ain = "ain" in case["meta"]["model_name"]
    base = os.path.join(REPO, "configs", "Market1501", f"osnet{'_ain' if ain else ''}_x1_0.yml")
    return load_cfg(base, ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "6",
                           "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]"] + list(extra))


@pytest.mark.parametrize("name", ["torchreid_osnet_x1_0.pt", "torchreid_osnet_ain_x1_0.pt"])
def test_torchreid_checkpoint_loads_through_model_weights_and_evaluates(reference_dir, name, tmp_path):
    """torchreid's save format ({'state_dict' with DataParallel's 'module.' prefix, 'epoch', ...}) loads
    through MODEL.WEIGHTS, and the loaded model gives the features torchreid computed (float32 case)."""
    case, sd = _peer(reference_dir, name)
    path = tmp_path / "model.pth.tar-250"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 250, "rank1": 0.9}, path)
    model, _ = build_evaluation_model(_peer_cfg(case), str(path))
    with torch.no_grad():
        feat = model({"images": case["inputs"]["images"]})
    ref = case["eval"]["feat"]
    assert ((feat - ref).abs() / ref.abs().clamp(min=1)).max() < 1e-4


def test_another_architectures_checkpoint_is_one_line_error(reference_dir, tmp_path):
    case, sd = _peer(reference_dir, "torchreid_osnet_ain_x1_0.pt")
    path = str(tmp_path / "ain.pth")
    torch.save(sd, path)
    expectations = [
        (_peer_cfg(case, "MODEL.BACKBONE.WITH_AIN", "False"), r"holds an OSNet-AIN, the config builds OSNet x1.0: "
                                                               r"set MODEL.BACKBONE.WITH_AIN True"),
        (_peer_cfg(case, "MODEL.BACKBONE.DEPTH", "x0_5"), r"set MODEL.BACKBONE.DEPTH x1_0"),
        (_peer_cfg(case, "MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.DEPTH", "18x"),
         r"the config builds no OSNet: set MODEL.BACKBONE.NAME build_osnet_backbone"),
        (_peer_cfg(case, "MODEL.HEADS.NUM_CLASSES", "751"), r"classifier has 6 classes, the model's 751 .* set "
                                                             r"MODEL.HEADS.NUM_CLASSES 6"),
    ]
    for cfg, message in expectations:
        with pytest.raises(CheckpointError, match=message) as info:
            load_model_weights(build_model(cfg), path, allow_partial=False)
        assert "\n" not in str(info.value)
    # under the BNNeck head the backbone loads and the missing neck is named
    with pytest.raises(CheckpointError, match=r"fills only .*\(missing 7 keys in 2 modules: heads \(1: weight\); "
                                              r"heads\.bottleneck \(6: "):
        load_model_weights(build_model(_peer_cfg(case, "MODEL.HEADS.NAME", "EmbeddingHead")), path,
                           allow_partial=False)


def test_imagenet_file_initialises_backbone_and_fc_as_torchreid(reference_dir, tmp_path):
    """torchreid's pretrained loading keeps every tensor of the ImageNet file whose name and size fit:
    the backbone and the fc; the 1000-class classifier is discarded."""
    case, sd = _peer(reference_dir, "torchreid_osnet_x1_0.pt")
    sd["classifier.weight"], sd["classifier.bias"] = torch.randn(1000, 512), torch.randn(1000)
    path = tmp_path / "osnet_x1_0_imagenet.pth"
    torch.save(sd, path)
    model = build_model(_peer_cfg(case, "MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", str(path)))
    own = model.state_dict()
    for key, value in sd.items():
        if key.startswith("classifier."):
            assert own[f"heads.{key}"].shape[0] == 6
        else:
            assert torch.equal(own[("heads." if key.startswith("fc.") else "backbone.") + key], value), key
    with pytest.raises(CheckpointError, match=r"holds no torchreid fc of width 256"):
        build_model(_peer_cfg(case, "MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", str(path),
                              "MODEL.HEADS.EMBEDDING_DIM", "256"))


@pytest.mark.parametrize("dataset", ["Market1501", "DukeMTMC", "MSMT17", "OccludedDuke"])
@pytest.mark.parametrize("ain", [False, True])
def test_configs_carry_torchreids_recipe(dataset, ain):
    """The values of torchreid's configs/im_osnet{_ain}_x1_0_softmax_256x128_amsgrad_cosine.yaml."""
    cfg = load_cfg(os.path.join(REPO, "configs", dataset, f"osnet{'_ain' if ain else ''}_x1_0.yml"), [])
    m, s = cfg.MODEL, cfg.SOLVER
    assert (m.BACKBONE.NAME, m.BACKBONE.DEPTH, m.BACKBONE.WITH_AIN, m.BACKBONE.PRETRAIN) == \
        ("build_osnet_backbone", "x1_0", ain, True)
    assert m.BACKBONE.PRETRAIN_PATH.endswith(f"osnet{'_ain' if ain else ''}_x1_0_imagenet.pth")
    assert (m.HEADS.NAME, m.HEADS.EMBEDDING_DIM) == ("TorchreidHead", 512)
    assert m.LOSSES.NAMES == ("CrossEntropyLoss",) and m.LOSSES.CE.EPSILON == 0.1  # loss softmax, label_smooth
    assert (s.OPTIMIZER_NAME, s.BASE_LR, s.WEIGHT_DECAY, s.IMS_PER_BATCH) == ("AMSGrad", 0.0015, 5e-4, 64)
    assert (s.SCHED.NAME, s.MAX_EPOCHS, s.ETA_MIN_LR, s.WARMUP_EPOCHS) == ("CosineAnnealingLR", 100 if ain else 250,
                                                                          0.0, 0)
    assert (s.FIXBASE_EPOCHS, tuple(m.OPEN_LAYERS)) == (10, ("classifier",))
    assert cfg.INPUT.SIZE_TRAIN == [256, 128] and cfg.INPUT.FLIP.ENABLED
    assert not cfg.INPUT.PADDING.ENABLED and not cfg.INPUT.REA.ENABLED  # transforms: random_flip only
    assert (cfg.TEST.METRIC, cfg.TEST.FEAT_NORM) == ("cosine" if ain else "euclidean", False)
    assert cfg.DATASETS.NAMES == (dataset,)
