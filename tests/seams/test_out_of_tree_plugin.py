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

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MY_PLUGIN = '''
"""A plugin outside the toolkit: a dataset, a backbone and a training phase, through public seams."""
import os

import torch
from torch import nn

from clipreid_plugin.config import CfgNode as CN
from clipreid_plugin.config import register_config_extension
from clipreid_plugin.data import DATASET_REGISTRY, SAMPLER_REGISTRY, ReIDDataset
from clipreid_plugin.data.datasets.bases import list_images, relabel
from clipreid_plugin.data.samplers import ReIDSampler
from clipreid_plugin.engine import HOOK_REGISTRY, PhaseHook
from clipreid_plugin.evaluation import EVALUATOR_REGISTRY, ReidEvaluator
from clipreid_plugin.modeling import BACKBONE_REGISTRY
from clipreid_plugin.modeling.backbones import Backbone, BackboneOutput
from clipreid_plugin.utils.checkpoint import unwrap_model


@register_config_extension
def add_my_plugin_config(cfg):
    cfg.MY_PLUGIN = CN()
    cfg.MY_PLUGIN.WIDTH = 16
    cfg.MY_PLUGIN.WARMUP_EPOCHS = 1


@DATASET_REGISTRY.register()
class TinyFolderReID(ReIDDataset):
    """<ROOT_DIR>/tiny/{train,query,gallery}/<pid>_<camid>_<n>.png"""

    def __init__(self, root):
        def parse(split):
            files = list_images(os.path.join(root, "tiny", split), "TinyFolderReID")
            return [(p, int(os.path.basename(p).split("_")[0]), int(os.path.basename(p).split("_")[1]), 0)
                    for p in files]

        super().__init__(relabel(parse("train")), parse("query"), parse("gallery"))


class TinyCNN(Backbone):
    def __init__(self, width):
        super().__init__()
        self.out_features = width
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, 2, 1))

    def forward(self, images, camids=None, viewids=None):
        return BackboneOutput(self.body(images))


@BACKBONE_REGISTRY.register()
def build_tiny_cnn_backbone(cfg):
    return TinyCNN(cfg.MY_PLUGIN.WIDTH)


@SAMPLER_REGISTRY.register()
class EpochCycleSampler(ReIDSampler):
    """Samples in index order, rotated by the epoch number, wrapped to whole batches."""

    def global_epoch_indices(self, epoch):
        n = len(self.pids)
        order = [(i + epoch) % n for i in range(n)]
        total = -(-n // self.batch_size) * self.batch_size
        print(f"EpochCycleSampler: epoch {epoch} starts at sample {order[0]}", flush=True)
        return (order * 2)[:total]


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
    """Trains the classifier alone for MY_PLUGIN.WARMUP_EPOCHS epochs before the main loop."""

    phase_name = "head_warmup"

    def __init__(self, cfg):
        self.num_epochs = cfg.MY_PLUGIN.WARMUP_EPOCHS
        self.done = False

    def state_dict(self):
        return {"done": self.done}

    def load_state_dict(self, state):
        self.done = state["done"]

    def before_train(self):
        if self.done:
            return
        model = unwrap_model(self.trainer.model)
        optimizer = torch.optim.SGD([model.heads.weight], lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
        scheduler.unit = "epoch"
        self.run_loop(model, self.trainer.data_loader, optimizer, scheduler, start_epoch=0)
        self.done = True
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
  BACKBONE: {{NAME: build_tiny_cnn_backbone}}
DATASETS: {{NAMES: [TinyFolderReID], TESTS: [TinyFolderReID], ROOT_DIR: {tmp_path / 'data'}}}
TRAINER: {{HOOKS: [HeadWarmupHook]}}
INPUT: {{SIZE_TRAIN: [32, 16], SIZE_TEST: [32, 16], PADDING: {{SIZE: 2}}}}
DATALOADER: {{NUM_WORKERS: 0, NUM_INSTANCE: 2, SAMPLER: EpochCycleSampler}}
SOLVER: {{MAX_EPOCHS: 2, IMS_PER_BATCH: 8, CHECKPOINT_PERIOD: 2, WARMUP_EPOCHS: 1, STEPS_EPOCHS: [5], LOG_PERIOD_ITERS: 1}}
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
    assert "EpochCycleSampler: epoch 1 starts at sample 1" in p.stdout  # the plugin's sampler
    log = (out / "log.txt").read_text()
    assert "Training schedule: head_warmup 1 epoch, then main 2 epochs" in log
    records = [json.loads(line) for line in open(out / "metrics.json")]
    assert any(r.get("phase") == "head_warmup" and "loss_cls" in r for r in records)
    assert any("phase" not in r and "loss_center" in r for r in records)
    saved = (out / "config.yaml").read_text()
    assert "MY_PLUGIN" in saved and re.search(r"CENTER:\n\s+LR: 0.5\n\s+SCALE: 0.001", saved)
    assert str(tmp_path / "center_loss.py") in saved and str(tmp_path / "my_plugin.py") in saved

    # The centers train in a parameter group of their own: LR 0.5 against BASE_LR 1e-3 of the base
    # config, both scaled by the same schedule multiplier; no weight decay.
    groups = {g["name"]: g for g in torch.load(out / "model_final.pth", weights_only=True)["optimizer"]["param_groups"]}
    centers, conv = groups["losses.2.centers"], groups["backbone.body.0.weight"]
    assert centers["weight_decay"] == 0.0 and conv["weight_decay"] == 5e-4
    assert abs(centers["lr"] / conv["lr"] - 0.5 / 1e-3) < 1e-9
