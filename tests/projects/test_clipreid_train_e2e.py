"""CLIP-ReID trains end to end (both phases) from the project configs, on CPU with a tiny CLIP built
locally (the plugin's ReID-Tiny-ViT-16 / ReID-Tiny-RN, random init, as the demo), and resumes from
a stage-1 checkpoint to exactly the same prompts. The reference's own checkpoint evaluates with
--eval-only (skipped without ../shared)."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from mini_trees import make_market, make_veri
from training_checks import assert_trained

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "projects", "CLIPReID", "configs")
TINY = ["SOLVER.MAX_EPOCHS", "2", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "2",
        "SOLVER.IMS_PER_BATCH", "16", "TEST.IMS_PER_BATCH", "16", "CLIPREID.STAGE1.MAX_EPOCHS", "2",
        "CLIPREID.STAGE1.IMS_PER_BATCH", "8", "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu",
        # the base LR from the first step: two epochs inside the configs' 5 to 10 warm-up epochs (from
        # 1% of it) move the weights too little for the training checks to see the loss fall
        "SOLVER.WARMUP_EPOCHS", "0"]


def tiny_clip(kind):
    """Overrides that replace the configs' OpenAI CLIP by the plugin's tiny config, randomly initialised.

    The ViT configs' base LR, 5e-6, fine-tunes OpenAI's weights; a random tiny ViT barely moves at
    it in two epochs, so it trains at the CNN configs' 3.5e-4."""
    lr = ["SOLVER.BASE_LR", "3.5e-4"] if kind == "vit" else []
    return ["MODEL.BACKBONE.PRETRAIN", "False", "CLIPREID.BACKBONE.MODEL_NAME",
            {"vit": "ReID-Tiny-ViT-16", "rn": "ReID-Tiny-RN"}[kind]] + lr


def reference_tiny_weights(reference_dir, kind):
    """The shared reference's tiny OpenAI-format CLIP file (architecture read from its shapes)."""
    return ["MODEL.BACKBONE.PRETRAIN_PATH", os.path.join(reference_dir, f"tiny_clip_{kind}_openai_format.pt"),
            "CLIPREID.BACKBONE.MODEL_NAME", ""]


def train_net(args, cwd):
    """tools/train_net.py in a subprocess (the CLI a user runs); returns the CompletedProcess."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py")] + args, cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=900)


def test_veri_vit_runs_both_phases_and_evaluates(tmp_path):
    """The VeRi ViT config: stage 1 through the engine's loop (progress lines, its checkpoint),
    the vehicle prompt from the dataset's kind, stage 2 with the image-to-text loss, evaluation."""
    make_veri(str(tmp_path / "data"))
    out = tmp_path / "out"
    p = train_net(["--config-file", os.path.join(CONFIGS, "veri_vit.yml"), "DATASETS.ROOT_DIR", str(tmp_path / "data"),
                   "OUTPUT_DIR", str(out), "INPUT.SIZE_TRAIN", "[64, 64]", "INPUT.SIZE_TEST", "[64, 64]"]
                  + tiny_clip("vit") + TINY, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    log = open(out / "log.txt").read()
    # stage 1 runs through the engine's loop: progress lines with the phase, its epochs and an ETA
    assert "[stage1]" in log and "epoch: 2" in log and "stage 1 done" in log
    assert "A photo of a X X X X vehicle." in log and "CLASS_WORD: vehicle" in open(out / "config.yaml").read()
    assert (out / "model_stage1_final.pth").is_file() and (out / "model_final.pth").is_file()
    results = json.load(open(out / "results.json"))
    assert set(results) == {"VeRi"} and 0 <= results["VeRi"]["mAP"] <= 100
    losses = [json.loads(l) for l in open(out / "metrics.json")]
    assert any("loss_i2t" in r for r in losses)  # stage 2 used the frozen text features
    assert_trained(str(out), modules=["backbone"])


def test_person_cnn_clipreid_runs_both_phases(tmp_path):
    """The Market-1501 CNN CLIP-ReID config trains both phases with the person prompt and evaluates."""
    make_market(str(tmp_path / "data"))
    out = tmp_path / "out"
    p = train_net(["--config-file", os.path.join(CONFIGS, "market1501", "cnn_clipreid.yml"),
                   "DATASETS.ROOT_DIR", str(tmp_path / "data"), "OUTPUT_DIR", str(out),
                   "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]"] + tiny_clip("rn") + TINY, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "CLASS_WORD: person" in open(out / "config.yaml").read()
    assert set(json.load(open(out / "results.json"))) == {"Market1501"}
    assert_trained(str(out), modules=["backbone"])


def _trainer(root, out, *extra):
    """DefaultTrainer on the Market CNN CLIP-ReID config with the tiny ModifiedResNet, 3 stage-1
    epochs with a checkpoint after each."""
    from clipreid_plugin.config import get_cfg
    from clipreid_plugin.engine import DefaultTrainer

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, "market1501", "cnn_clipreid.yml"))
    cfg.merge_from_list(TINY + ["DATASETS.ROOT_DIR", root, "OUTPUT_DIR", out, "INPUT.SIZE_TRAIN", "[64, 32]",
                                "INPUT.SIZE_TEST", "[64, 32]", "CLIPREID.STAGE1.MAX_EPOCHS", "3",
                                "CLIPREID.STAGE1.CHECKPOINT_PERIOD", "1"] + tiny_clip("rn") + list(extra))
    cfg.freeze()
    return DefaultTrainer(cfg)


def _text_side(trainer):
    """(cls_ctx, frozen text features) of a trainer's model, copied."""
    head = trainer.model.text_head
    return head.prompt_learner.cls_ctx.detach().clone(), head.text_features.detach().clone()


def test_resume_inside_stage1_reaches_the_same_prompts(tmp_path):
    """Killed after stage-1 epoch 2 of 3, a resumed run ends stage 1 with exactly the prompts and
    text features of an uninterrupted run; stage 2 from the stage-1 checkpoint keeps the prompts."""
    root = make_market(str(tmp_path / "data"))
    ref_dir, run_dir = str(tmp_path / "ref"), str(tmp_path / "run")
    ref = _trainer(root, ref_dir, "SOLVER.MAX_EPOCHS", "0")  # stage 1 alone
    ref.resume_or_load(resume=True)
    initial = {k: v.clone() for k, v in ref.model.state_dict().items()}
    ref.train()
    ref_ctx, ref_text = _text_side(ref)
    assert ref.model.has_text_features()
    # stage 1 trained the prompts (and nothing of the image side)
    assert_trained(ref_dir, phase="stage1", modules=["text_head.prompt_learner"], before=initial)

    # the state a kill after stage-1 epoch 2 leaves on disk: the epoch-2 checkpoint is the last one
    run = _trainer(root, run_dir, "SOLVER.MAX_EPOCHS", "0")
    run.resume_or_load(resume=True)
    run.train()
    os.remove(os.path.join(run_dir, "model_stage1_final.pth"))
    with open(os.path.join(run_dir, "last_checkpoint"), "w") as f:
        f.write("model_stage1_0002.pth")

    resumed = _trainer(root, run_dir, "SOLVER.MAX_EPOCHS", "0")
    resumed.resume_or_load(resume=True)
    hook = next(h for h in resumed.hooks if type(h).__name__ == "CLIPReIDStage1Hook")
    assert hook.epochs_done == 2 and not hook.done
    resumed.train()
    ctx, text = _text_side(resumed)
    assert torch.equal(ctx, ref_ctx) and torch.equal(text, ref_text)

    # stage 2 from the stage-1 checkpoint: no stage 1 again, the tokens are kept
    stage2 = _trainer(root, str(tmp_path / "s2"), "CLIPREID.PHASES", "stage2", "MODEL.WEIGHTS",
                      os.path.join(ref_dir, "model_stage1_final.pth"))
    stage2.resume_or_load(resume=False)
    assert torch.equal(_text_side(stage2)[0], ref_ctx)
    stage2.train()
    assert torch.equal(_text_side(stage2)[0], ref_ctx)  # stage 2 never changes the prompts
    assert_trained(str(tmp_path / "s2"), modules=["backbone"])
    assert not os.path.exists(os.path.join(str(tmp_path / "s2"), "model_stage1_final.pth"))


@pytest.mark.parametrize("method,kind", [("vit_base", "vit"), ("cnn_base", "rn")])
def test_clip_baseline_configs_train_on_synthetic(tmp_path, method, kind):
    """The CLIP baseline configs train (ID + triplet losses, no text side) and evaluate on SyntheticReID."""
    out = tmp_path / "out"
    p = train_net(["--config-file", os.path.join(CONFIGS, "market1501", f"{method}.yml"),
                   "DATASETS.NAMES", "('SyntheticReID',)", "DATASETS.TESTS", "('SyntheticReID',)",
                   "DATASETS.ROOT_DIR", str(tmp_path / "data"), "OUTPUT_DIR", str(out),
                   "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "6", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "4",
                   "DATASETS.SYNTHETIC.IMAGES_PER_ID", "4", "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "2",
                   "DATASETS.SYNTHETIC.NUM_JUNK", "1", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
                   "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]"] + tiny_clip(kind) + TINY,
                  cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    results = json.load(open(out / "results.json"))
    assert set(results) == {"SyntheticReID"}
    records = [json.loads(l) for l in open(out / "metrics.json")]
    assert any("loss_cls" in r and "loss_triplet" in r for r in records)
    assert not any("loss_i2t" in r for r in records)  # the baseline has no text side
    assert_trained(str(out), modules=["backbone"])


def test_reference_checkpoint_evaluates_with_eval_only(tmp_path, reference_dir):
    """The reference's own checkpoint (model-zoo style, "module." prefix) loads through
    MODEL.WEIGHTS with every tensor placed, and evaluates with --eval-only."""
    case = torch.load(os.path.join(reference_dir, "case_vit_person.pt"), weights_only=True)
    # a model-zoo style file: plain state dict, saved from DataParallel ("module." prefix)
    weights = tmp_path / "ViT-B-16_60.pth"
    torch.save({"module." + k: v for k, v in case["state_dict"].items()}, weights)
    make_market(str(tmp_path / "data"), train_ids=case["meta"]["num_classes"])
    out = tmp_path / "out"
    p = train_net(["--config-file", os.path.join(CONFIGS, "market1501", "vit_clipreid.yml"), "--eval-only",
                   "MODEL.WEIGHTS", str(weights), "DATASETS.ROOT_DIR", str(tmp_path / "data"), "OUTPUT_DIR", str(out)]
                  + reference_tiny_weights(reference_dir, "vit") + TINY, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    log = open(out / "log.txt").read()
    assert "reference CLIP-ReID format" in log
    # every tensor of the model comes from the file (its 2 frozen text-feature buffers, which the
    # reference never stores, keep their "not computed" state)
    loaded = re.search(r"Loaded (\d+)/(\d+) tensors", log)
    assert loaded and loaded.group(1) == loaded.group(2) == str(len(case["state_dict"]) + 2)
    assert "unexpected" not in log and "mismatched" not in log
    assert set(json.load(open(out / "results.json"))) == {"Market1501"}
