"""A toy ReID-shaped problem for engine tests that must not depend on datasets or models."""
import os

import torch
from torch import nn

from clipreid_plugin.config import DataInfo, get_cfg
from clipreid_plugin.engine import DefaultTrainer


class ToyLoader:
    """Deterministic per-epoch batches: contents depend only on (epoch, step), like the real loader."""

    def __init__(self, iters=3, batch=8, dim=6, num_classes=4):
        self.iters, self.batch, self.dim = iters, batch, dim
        self.num_classes = num_classes
        self.data_info = DataInfo(num_classes, 2, 1, None)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.iters

    def __iter__(self):
        g = torch.Generator().manual_seed(100 + self.epoch)
        for _ in range(self.iters):
            x = torch.randn(self.batch, self.dim, generator=g)
            y = torch.randint(0, self.num_classes, (self.batch,), generator=g)
            yield {"images": x, "targets": y, "camids": torch.zeros_like(y), "viewids": torch.zeros_like(y)}


class ToyModel(nn.Module):
    """Linear classifier with dropout (consumes the global RNG, so seeding matters)."""

    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(6, cfg.MODEL.HEADS.NUM_CLASSES)
        self.drop = nn.Dropout(0.2)

    def forward(self, batch):
        logits = self.fc(self.drop(batch["images"]))
        if self.training:
            return {"loss_cls": nn.functional.cross_entropy(logits, batch["targets"])}
        return logits


class ToyTrainer(DefaultTrainer):
    """DefaultTrainer with the toy parts; evaluation returns the sum of weights as a 'metric'."""

    @classmethod
    def build_train_loader(cls, cfg):
        return ToyLoader()

    @classmethod
    def build_model(cls, cfg):
        torch.manual_seed(0)
        return ToyModel(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return torch.optim.Adam(model.parameters(), lr=cfg.SOLVER.BASE_LR)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch):
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 0.5 ** e)
        sched.unit = "epoch"
        return sched

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        m = model.module if hasattr(model, "module") else model
        return {"Toy": {"weight_sum": float(m.fc.weight.detach().sum())}}


def toy_cfg(output_dir, **overrides):
    cfg = get_cfg()
    cfg.merge_from_list(["OUTPUT_DIR", str(output_dir), "SOLVER.MAX_EPOCHS", "4", "SOLVER.BASE_LR", "0.1",
                         "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "2", "SOLVER.LOG_PERIOD_ITERS", "1",
                         "MODEL.DEVICE", "cpu"]
                        + [str(x) for kv in overrides.items() for x in kv])
    cfg.freeze()
    return cfg


class RankLoader(ToyLoader):
    """Different data on every rank, so only gradient all-reduce can keep the weights equal."""

    def __iter__(self):
        from clipreid_plugin.utils import comm

        g = torch.Generator().manual_seed(100 + self.epoch + 1000 * comm.get_rank())
        for _ in range(self.iters):
            x = torch.randn(self.batch, self.dim, generator=g)
            y = torch.randint(0, self.num_classes, (self.batch,), generator=g)
            yield {"images": x, "targets": y, "camids": torch.zeros_like(y), "viewids": torch.zeros_like(y)}


class RankTrainer(ToyTrainer):
    eval_calls = 0

    @classmethod
    def build_train_loader(cls, cfg):
        return RankLoader()

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        from clipreid_plugin.utils import comm

        with open(os.path.join(cfg.OUTPUT_DIR, f"eval_rank{comm.get_rank()}.txt"), "a") as f:
            f.write("eval\n")
        return super().test(cfg, model) if comm.is_main_process() else {}


def distributed_main(output_dir):
    """Per-process body of the 2-process test: train, then save this rank's weights."""
    from clipreid_plugin.utils import comm

    import argparse

    from clipreid_plugin.engine import default_setup

    cfg = toy_cfg(output_dir, **{"SOLVER.MAX_EPOCHS": 2, "TEST.EVAL_PERIOD": 0})
    default_setup(cfg, argparse.Namespace())
    t = RankTrainer(cfg)
    t.resume_or_load(resume=False)
    results = t.train()
    torch.save({"weights": {k: v.detach().clone() for k, v in t.model.module.state_dict().items()},
                "results": results, "world": comm.get_world_size()},
               os.path.join(output_dir, f"rank{comm.get_rank()}.pt"))



