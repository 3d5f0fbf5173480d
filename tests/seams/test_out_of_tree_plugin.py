"""A third-party plugin written outside the package trains and evaluates through tools/train_net.py.

The plugin lives in a temporary folder and adds, with no edit inside clipreid_plugin:
* the README's CenterLoss (extracted from README.md, so the example there stays literally true):
  a loss with config keys and a parameter group of its own;
* a dataset in a folder format of its own;
* a backbone;
* a training-phase hook (trains the classifier alone before the main loop);
* a sampler and an evaluator.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from training_checks import assert_loss_fell, assert_trained

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MY_PLUGIN = '''
"""A plugin outside the toolkit: a dataset, a backbone, a camera-balanced sampler, an evaluator and
a training phase, through the package face only, each built with the configurable convention."""
import os
from collections import Counter

import numpy as np
import torch
from torch import nn

from clipreid_plugin.config import CfgNode as CN
from clipreid_plugin.config import configurable, register_config_extension
from clipreid_plugin.data import (DATASET_REGISTRY, SAMPLER_REGISTRY, ReIDDataset, ReIDSampler, list_images,
                                  relabel)
from clipreid_plugin.engine import HOOK_REGISTRY, PhaseHook, TrainerProtocol
from clipreid_plugin.evaluation import EVALUATOR_REGISTRY, ReidEvaluator
from clipreid_plugin.modeling import BACKBONE_REGISTRY, Backbone, BackboneOutput
from clipreid_plugin.utils.checkpoint import unwrap_model


@register_config_extension
def add_my_plugin_config(cfg):
    cfg.MY_PLUGIN = CN()
    cfg.MY_PLUGIN.WIDTH = 16
    cfg.MY_PLUGIN.WARMUP_EPOCHS = 2
    cfg.MY_PLUGIN.CAMERAS_PER_BATCH = 2  # the sampler's own key


@DATASET_REGISTRY.register()
class TinyFolderReID(ReIDDataset):
    """<ROOT_DIR>/tiny/{train,query,gallery}/<pid>_<camid>_<n>.png"""

    @configurable
    def __init__(self, root):
        def parse(split):
            files = list_images(os.path.join(root, "tiny", split), "TinyFolderReID")
            return [(p, int(os.path.basename(p).split("_")[0]), int(os.path.basename(p).split("_")[1]), 0)
                    for p in files]

        super().__init__(relabel(parse("train")), parse("query"), parse("gallery"))


@BACKBONE_REGISTRY.register()
class TinyCNN(Backbone):
    @configurable
    def __init__(self, *, width=16):
        super().__init__()
        self.out_features = width
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, 2, 1))

    @classmethod
    def from_config(cls, cfg):
        return {"width": cfg.MY_PLUGIN.WIDTH}

    def forward(self, images, camids=None, viewids=None):
        return BackboneOutput(self.body(images))


@SAMPLER_REGISTRY.register()
class CameraBalancedSampler(ReIDSampler):
    """Every batch holds the same number of images of each of MY_PLUGIN.CAMERAS_PER_BATCH cameras."""

    @configurable
    def __init__(self, *, cameras_per_batch=2, **kwargs):
        super().__init__(**kwargs)
        self.cameras_per_batch = cameras_per_batch

    @classmethod
    def from_config(cls, cfg, **context):
        return dict(super().from_config(cfg, **context), cameras_per_batch=cfg.MY_PLUGIN.CAMERAS_PER_BATCH)

    def global_epoch_indices(self, epoch):
        rng = self._rng(epoch)
        cams = sorted(set(self.camids.tolist()))[: self.cameras_per_batch]
        per_cam = self.batch_size // len(cams)
        pools = [rng.permutation(np.flatnonzero(self.camids == c)) for c in cams]
        batches = min(len(p) for p in pools) // per_cam
        out = []
        for b in range(batches):
            for p in pools:
                out += p[b * per_cam:(b + 1) * per_cam].tolist()
        first = Counter(self.camids[out[:self.batch_size]].tolist())
        print(f"CameraBalancedSampler: epoch {epoch} batch cameras {sorted(first.values())}", flush=True)
        return out


@EVALUATOR_REGISTRY.register()
class CountingReidEvaluator(ReidEvaluator):
    """The standard evaluation plus the number of images it saw."""

    def reset(self):
        super().reset()
        self.images_seen = 0

    def process(self, inputs, outputs):
        self.images_seen += outputs.shape[0]
        super().process(inputs, outputs)

    def evaluate(self):
        results = super().evaluate()
        if results:
            results["images_seen"] = float(self.images_seen)
        return results


@HOOK_REGISTRY.register()
class HeadWarmupHook(PhaseHook):
    """Trains the classifier alone for MY_PLUGIN.WARMUP_EPOCHS epochs before the main loop, then saves
    model_head_warmup_final.pth (a phase name with an underscore, which --resume must find)."""

    phase_name = "head_warmup"

    @configurable
    def __init__(self, *, epochs=1):
        self.num_epochs = epochs
        self.done = False

    @classmethod
    def from_config(cls, cfg):
        return {"epochs": cfg.MY_PLUGIN.WARMUP_EPOCHS}

    def state_dict(self):
        return {"done": self.done}

    def load_state_dict(self, state):
        self.done = state["done"]

    def before_train(self):
        assert isinstance(self.trainer, TrainerProtocol)
        if self.done:
            print("HeadWarmupHook: already done", flush=True)
            return
        model = unwrap_model(self.trainer.model)
        optimizer = torch.optim.SGD([model.heads.weight], lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
        scheduler.unit = "epoch"
        self.run_loop(model, self.trainer.data_loader, optimizer, scheduler, start_epoch=0)
        self.done = True
        self.trainer.checkpointer.save("model_head_warmup_final")
'''


def readme_center_loss():
    """The CenterLoss example of README.md: its python file and its YAML file, verbatim."""
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    python = re.search(r"```python\n(# center_loss\.py\n.*?)```", text, re.S).group(1)
    yaml = re.search(r"```yaml\n(# center_loss\.yml.*?)```", text, re.S).group(1)
    return python, yaml


def write_tiny_folder(root, rng):
    """4 train identities x 4 images (2 cameras), 3 test identities (1 query + 2 gallery each)."""
    colours = {pid: rng.integers(0, 256, 3) for pid in range(10)}
    for split, pids, per_id in (("train", range(4), 4), ("query", range(4, 7), 1), ("gallery", range(4, 7), 2)):
        folder = os.path.join(root, "tiny", split)
        os.makedirs(folder, exist_ok=True)
        for pid in pids:
            for n in range(per_id):
                cam = (n + (1 if split == "gallery" else 0)) % 2 + (0 if split != "gallery" else 1)
                pixels = np.clip(colours[pid] + rng.normal(0, 20, (32, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{pid}_{cam}_{n}.png"))


def test_plugin_outside_the_package_trains_and_evaluates(tmp_path):
    python, yaml = readme_center_loss()
    (tmp_path / "center_loss.py").write_text(python)
    # the README's YAML sits next to center_loss.py; its _BASE_ is relative to the repository root
    (tmp_path / "center_loss.yml").write_text(yaml.replace("_BASE_: configs/", f"_BASE_: {REPO}/configs/"))
    (tmp_path / "my_plugin.py").write_text(MY_PLUGIN)
    write_tiny_folder(str(tmp_path / "data"), np.random.default_rng(0))
    out = tmp_path / "out"
    (tmp_path / "run.yml").write_text(f"""\
_BASE_: center_loss.yml
PLUGINS: [my_plugin.py]
MODEL:
  DEVICE: cpu
  BACKBONE: {{NAME: TinyCNN}}
DATASETS: {{NAMES: [TinyFolderReID], TESTS: [TinyFolderReID], ROOT_DIR: {tmp_path / 'data'}}}
TRAINER: {{HOOKS: [HeadWarmupHook]}}
INPUT: {{SIZE_TRAIN: [32, 16], SIZE_TEST: [32, 16], PADDING: {{SIZE: 2}}}}
DATALOADER: {{NUM_WORKERS: 0, NUM_INSTANCE: 2, SAMPLER: CameraBalancedSampler}}
SOLVER: {{MAX_EPOCHS: 2, IMS_PER_BATCH: 8, CHECKPOINT_PERIOD: 1, WARMUP_EPOCHS: 1, STEPS_EPOCHS: [5], LOG_PERIOD_ITERS: 1}}
TEST: {{EVAL_PERIOD: 2, IMS_PER_BATCH: 8, EVALUATOR: CountingReidEvaluator}}
OUTPUT_DIR: {out}
""")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
                        str(tmp_path / "run.yml")], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    results = json.load(open(out / "results.json"))
    assert set(results) == {"TinyFolderReID"} and 0 <= results["TinyFolderReID"]["mAP"] <= 100
    assert results["TinyFolderReID"]["images_seen"] == 3 + 6  # the plugin's evaluator: query + gallery
    assert "CameraBalancedSampler: epoch 1 batch cameras [4, 4]" in p.stdout  # the plugin's sampler, its key
    log = (out / "log.txt").read_text()
    assert "Training schedule: head_warmup 2 epochs, then main 2 epochs" in log
    records = [json.loads(line) for line in open(out / "metrics.json")]
    assert any(r.get("phase") == "head_warmup" and "loss_cls" in r for r in records)
    assert any("phase" not in r and "loss_center" in r for r in records)
    # both loops trained: the plugin's phase (the classifier alone) and the main loop (the plugin's
    # backbone and the README's centers, in their own parameter group)
    assert_loss_fell(str(out), phase="head_warmup")
    assert_trained(str(out), modules=["backbone", "losses.2.centers"])
    saved = (out / "config.yaml").read_text()
    assert "MY_PLUGIN" in saved and re.search(r"CENTER_LOSS:\n\s+LR: 0.5\n\s+SCALE: 0.001", saved)
    assert str(tmp_path / "center_loss.py") in saved and str(tmp_path / "my_plugin.py") in saved

    # The centers train in a parameter group of their own: LR 0.5 against BASE_LR 1e-3 of the base
    # config, both scaled by the same schedule multiplier; no weight decay.
    groups = {g["name"]: g for g in torch.load(out / "model_final.pth", weights_only=True)["optimizer"]["param_groups"]}
    centers, conv = groups["losses.2.centers"], groups["backbone.body.0.weight"]
    assert centers["weight_decay"] == 0.0 and conv["weight_decay"] == 5e-4
    assert abs(centers["lr"] / conv["lr"] - 0.5 / 1e-3) < 1e-9

    # --resume finds the phase's checkpoint although its name has an underscore: with the main
    # loop's checkpoints gone, the run continues from model_head_warmup_final.pth, phase done.
    for path in [*out.glob("model_0*.pth"), out / "model_final.pth", out / "last_checkpoint", out / "results.json"]:
        if path.exists():
            path.unlink()
    p = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
                        str(tmp_path / "run.yml"), "--resume"], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "HeadWarmupHook: already done" in p.stdout
    assert "Resuming from model_head_warmup_final.pth" in (out / "log.txt").read_text()
    assert (out / "model_final.pth").exists()
