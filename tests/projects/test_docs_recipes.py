"""docs/RECIPES.md: every command in it runs, as written, on tiny data (read from the markdown, so the
doc and this test cannot drift); the fast-reid key table is the converter's; the converter maps by hand-checked values.

The commands run in a scratch folder laid out like a checkout: ``configs/`` and ``projects/`` linked
from the repository, miniature Market-1501, VeRi and GenericReID trees under ``datasets/``, and a
``HOME`` whose ``~/.cache`` holds tiny OpenAI-format CLIP files (the ReID-Tiny models) and a random
torchvision ResNet-18 file under the names the recipes use. Training commands get one epoch per
phase, tiny batches and images, and ResNet-18 for ResNet-50 appended (later ``KEY VALUE`` pairs
win); nothing else is changed.
"""

import json
import os
import re
import shlex

import pytest
import torch
import torchvision

from mini_trees import make_generic, make_market, make_veri
from tool_cli import load_tool

from clipreid_plugin.config import load_cfg
from clipreid_plugin.usertools.fastreid_config import (
    KEY_MAP, convert_fastreid_config, converted_yaml, is_fastreid_config,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO, "docs", "RECIPES.md")

TINY = ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", "SOLVER.MAX_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "1",
        "SOLVER.STEPS_EPOCHS", "[1]", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "1",
        "SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_INSTANCE", "2", "TEST.IMS_PER_BATCH", "32",
        "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]"]
TINY_STAGE1 = ["CLIPREID.STAGE1.MAX_EPOCHS", "1", "CLIPREID.STAGE1.IMS_PER_BATCH", "8",
               "CLIPREID.STAGE1.WARMUP_EPOCHS", "1"]
R18_FILE = "~/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth"
TINY_RESNET = ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.PRETRAIN_PATH", R18_FILE]  # ResNet-50 is 4x slower


def doc_blocks(lang):
    """(info string, body) of every fenced block of ``lang`` in RECIPES.md, in order."""
    text = open(DOC, encoding="utf-8").read()
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```" + lang + r"([^\n]*)\n(.*?)^```", text, re.M | re.S)]


def doc_commands():
    """The shell commands of the bash blocks (continuation lines joined), as argument lists."""
    commands = []
    for _, body in doc_blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            if line.strip() and not line.strip().startswith("#"):
                commands.append(shlex.split(line))
    return commands


def save_tiny_clip(model_name, path):
    """An OpenAI-format state dict of one of the toolkit's tiny CLIP models (what ~/.cache/clip holds)."""
    import open_clip

    from clipreid_plugin.plugins.clipreid.clip_weights import register_toolkit_model_configs

    register_toolkit_model_configs()
    torch.manual_seed(0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(open_clip.create_model(model_name).state_dict(), path)


def save_random_resnet(builder, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(getattr(torchvision.models, builder)(weights=None).state_dict(), path)


@pytest.fixture()
def checkout(tmp_path, monkeypatch):
    """A scratch folder laid out like a checkout after `make demo`, with tiny data and weights."""
    for name in ("configs", "projects"):
        os.symlink(os.path.join(REPO, name), tmp_path / name)
    make_market(str(tmp_path / "datasets"))
    make_veri(str(tmp_path / "datasets"))
    make_generic(str(tmp_path / "datasets"), "my_cameras")
    home = tmp_path / "home"
    save_tiny_clip("ReID-Tiny-ViT-16", str(home / ".cache" / "clip" / "ViT-B-16.pt"))
    save_tiny_clip("ReID-Tiny-RN", str(home / ".cache" / "clip" / "RN50.pt"))
    save_random_resnet("resnet18", str(home / R18_FILE[2:]))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(home / ".cache" / "torch"))
    monkeypatch.chdir(tmp_path)
    for info, body in doc_blocks("yaml"):
        m = re.search(r"file=(\S+)", info)
        if m:
            (tmp_path / m.group(1)).write_text(body)
    return tmp_path


def option(argv, key):
    """The value after the last ``key`` in ``argv`` (None when absent)."""
    idx = [i for i, a in enumerate(argv) if a == key]
    return argv[idx[-1] + 1] if idx else None


def reference_checkpoint_from(run_dir, path):
    """Save a run's final model as the reference CLIP-ReID writes its model zoo files: its key names,
    a DataParallel ``module.`` prefix, a bare state dict."""
    from clipreid_plugin.modeling import build_model
    from clipreid_plugin.plugins.clipreid.reference_checkpoint import to_reference_key

    model = build_model(load_cfg(os.path.join(run_dir, "config.yaml")))
    sd = torch.load(os.path.join(run_dir, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    model.load_state_dict(sd)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"module." + to_reference_key(model, k): v for k, v in model.state_dict().items()}, path)


def test_every_recipe_command_runs(checkout, capsys):
    commands = doc_commands()
    tools = [argv[1] for argv in commands]
    assert all(argv[0] == "python" for argv in commands)
    assert tools.count("tools/train_net.py") >= 8 and "tools/convert_fastreid_config.py" in tools
    train_net, convert = load_tool("train_net"), load_tool("convert_fastreid_config")
    trained = {}
    for argv in commands:
        what = " ".join(argv)
        if argv[1] == "tools/convert_fastreid_config.py":
            convert.main(argv[2:])
            out = capsys.readouterr().out
            # what the page says the converter reports: every key mapped
            assert "keys mapped" in out and "Not mapped" not in out, out
            continue
        assert argv[1] == "tools/train_net.py", what
        cfg_file = option(argv, "--config-file")
        if is_fastreid_config(cfg_file):  # train_net converts it on load
            ours, unmapped = convert_fastreid_config(cfg_file)
            cfg_file = os.path.join(os.path.dirname(os.path.abspath(cfg_file)), "converted_for_test.yml")
            open(cfg_file, "w").write(converted_yaml(ours, unmapped, option(argv, "--config-file")))
        cfg = load_cfg(cfg_file)
        extra = TINY + (TINY_STAGE1 if "CLIPREID" in cfg else []) + \
            (TINY_RESNET if cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone" else []) + \
            (["SOLVER.WARMUP_ITERS", "0"] if cfg.SOLVER.WARMUP_ITERS > 0 else [])  # TINY warms up in epochs
        if "--eval-only" in argv:
            weights = option(argv, "MODEL.WEIGHTS")
            reference_checkpoint_from(trained[cfg_file], weights)  # a model-zoo file of the same method
        assert train_net.cli(argv[2:] + extra) == 0, f"{what}\n{capsys.readouterr().err[-3000:]}"
        out_dir = option(argv, "OUTPUT_DIR")
        results = json.load(open(os.path.join(out_dir, "results.json")))
        assert results and all(0 <= m["mAP"] <= 100 for m in results.values()), what
        if "--eval-only" in argv:
            log = open(os.path.join(out_dir, "log.txt")).read()
            assert "reference CLIP-ReID format" in log and "unexpected" not in log, what
            # the same weights give the same numbers as at the end of their training
            before = json.load(open(os.path.join(trained[cfg_file], "results.json")))
            assert results["Market1501"]["mAP"] == pytest.approx(before["Market1501"]["mAP"], abs=1e-4)
        elif "DATASETS.GENERIC.DIR" not in argv:
            trained[cfg_file] = out_dir
    capsys.readouterr()


def test_fast_reid_table_is_the_converters():
    text = open(DOC, encoding="utf-8").read()
    section = text[text.index("## Coming from fast-reid"):]
    rows = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            rows.add((cells[0].replace("`", ""), cells[1].replace("`", ""), cells[2]))
    mapped = {(m.fastreid, m.ours, m.note) for m in KEY_MAP}
    # every renamed key, and every key whose value changes, is in the doc's table with the converter's note
    assert {r for r in mapped if r[0] != r[1] or r[2]} <= rows
    assert rows <= mapped
    for key in ("SOLVER.MAX_EPOCH", "SOLVER.OPT", "SOLVER.STEPS", "SOLVER.SCHED", "DATALOADER.SAMPLER_TRAIN",
                "MODEL.LOSSES.NAME", "MODEL.HEADS.NECK_FEAT"):  # the renames and meanings the issues listed
        assert any(r[0] == key for r in rows)


def test_converter_maps_a_fast_reid_config_by_hand(tmp_path):
    (tmp_path / "Base.yml").write_text(
        "MODEL:\n  PIXEL_MEAN: [123.675, 116.28, 103.53]\n  BACKBONE:\n    DEPTH: 101x\n    WITH_IBN: True\n"
        "    PRETRAIN: True\n    STRIDE_SIZE: (16, 16)\n  HEADS:\n    POOL_LAYER: GeneralizedMeanPooling\n"
        "  LOSSES:\n    NAME: ('CrossEntropyLoss', 'CircleLoss')\n    TRI:\n      MARGIN: 0.0\n"
        "SOLVER:\n  OPT: Lamb\n  MAX_EPOCH: 60\n  STEPS: [20, 40]\n  SCHED: CosineAnnealingLR\n"
        "  CLIP_GRADIENTS:\n    ENABLED: True\n    CLIP_TYPE: value\n    CLIP_VALUE: 5\n"
        "DATALOADER:\n  SAMPLER_TRAIN: BalancedIdentitySampler\n")
    (tmp_path / "child.yml").write_text("_BASE_: Base.yml\nSOLVER:\n  MAX_EPOCH: 30\nDATASETS:\n  NAMES: ('VeRi',)\n")
    ours, unmapped = convert_fastreid_config(str(tmp_path / "child.yml"))
    assert ours["SOLVER.MAX_EPOCHS"] == 30  # the child wins over its _BASE_
    assert ours["SOLVER.STEPS_EPOCHS"] == [20, 40] and ours["SOLVER.SCHED.NAME"] == "CosineAnnealingLR"
    assert ours["SOLVER.CLIP_GRADIENTS.CLIP_TYPE"] == "value" and ours["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"] == 5.0
    assert ours["SOLVER.WARMUP_ITERS"] == 1000 and ours["SOLVER.WARMUP_EPOCHS"] == 0  # fast-reid's default warmup
    assert ours["INPUT.PIXEL_MEAN"] == pytest.approx([0.485, 0.456, 0.406])  # 123.675 / 255 = 0.485
    assert ours["MODEL.HEADS.POOL_LAYER"] == "GeneralizedMeanPooling" and ours["DATASETS.NAMES"] == ["VeRi"]
    assert ours["MODEL.LOSSES.NAMES"] == ["CrossEntropyLoss", "CircleLoss"] and ours["MODEL.BACKBONE.WITH_IBN"]
    assert ours["DATALOADER.SAMPLER"] == "BalancedIdentitySampler"
    assert ours["MODEL.LOSSES.TRI.MARGIN"] == 0.0  # a soft margin, as in fast-reid
    assert "MODEL.BACKBONE.PRETRAIN_PATH" not in ours  # IBN-Net's ImageNet file: the user names it (a note says)
    reasons = {u.key: u.reason for u in unmapped}
    assert set(reasons) == {"SOLVER.OPT", "MODEL.BACKBONE.STRIDE_SIZE"}
    assert "Lamb" in reasons["SOLVER.OPT"] and "ViT" in reasons["MODEL.BACKBONE.STRIDE_SIZE"]
    out = tmp_path / "ours.yml"
    load_tool("convert_fastreid_config").main([str(tmp_path / "child.yml"), "--output", str(out)])
    cfg = load_cfg(str(out))
    assert cfg.SOLVER.MAX_EPOCHS == 30 and cfg.MODEL.HEADS.POOL_LAYER == "GeneralizedMeanPooling"
    assert "#   SOLVER.OPT" in out.read_text()  # the file lists what it left out
    from clipreid_plugin.utils.cli import run_tool

    assert run_tool(lambda: load_tool("convert_fastreid_config").main([str(tmp_path / "child.yml"), "--output",
                                                                       str(out)])) == 2  # exists: --force
