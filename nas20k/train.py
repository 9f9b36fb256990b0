"""Train one `ArchSpec` on in-memory MNIST.

The trainer knows nothing of the search: after every epoch it hands an `EpochStats` to a callback,
which may raise to stop the run (that is how the search prunes).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from nas20k.data import Mnist, Split, augment, batches
from nas20k.factory import ArchSpec

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "step", "none")


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (momentum, optionally nesterov) | adam | adamw
    lr: float = 0.05  # peak learning rate (OneCycle's max_lr; the start for step/none)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | step (x0.1 at 1/2 and 3/4 of the epochs) | none
    label_smoothing: float = 0.0
    rotate: float = 10.0  # random rotation, +-degrees
    translate: float = 1.0  # random shift, +-pixels
    seed: int = 0
    compile: bool = False  # torch.compile: worth it only for long runs (see benchmarks/throughput.py)

    def validate(self) -> TrainConfig:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch size must be >= 2, got {self.batch_size}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_acc: float
    seconds: float
    lr: float


@dataclass
class TrainResult:
    model: nn.Module
    status: str  # "complete" | "diverged"
    history: list[EpochStats] = field(default_factory=list)


def evaluate(model: nn.Module, split: Split, batch_size: int = 1000) -> float:
    """Top-1 accuracy in eval mode (BatchNorm running stats, no Dropout)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=split.y.device)
    with torch.inference_mode():
        for idx in batches(len(split), batch_size):
            correct += (model(split.x[idx]).argmax(1) == split.y[idx]).sum()
    return correct.item() / len(split)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per batch."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[total // 2, total * 3 // 4], gamma=0.1)
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


def _progress(total: int, enabled: bool):  # noqa: ANN202 - a rich Progress or None
    if not (enabled and sys.stderr.isatty()):
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)


def train(
    spec: ArchSpec,
    cfg: TrainConfig,
    data: Mnist,
    on_epoch: Callable[[EpochStats], None] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train for `cfg.epochs` (fewer if the loss goes NaN/inf: status "diverged"); the model ends in eval mode."""
    cfg.validate()
    device = data.train.x.device
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    model = spec.build().to(device)
    step = torch.compile(model) if cfg.compile else model
    opt = _optimizer(model, cfg)
    steps_per_epoch = len(data.train) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {cfg.batch_size} is larger than the {len(data.train)} training images")
    sched = _scheduler(opt, cfg, steps_per_epoch)
    result = TrainResult(model=model, status="complete")
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        bar = _progress(steps_per_epoch, progress)
        task = bar.add_task(f"epoch {epoch}/{cfg.epochs}", total=steps_per_epoch) if bar else None
        if bar:
            bar.start()
        for idx in batches(len(data.train), cfg.batch_size, gen):
            x, y = augment(data.train.x[idx], cfg.rotate, cfg.translate, gen), data.train.y[idx]
            out = step(x)
            loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
            correct += (out.detach().argmax(1) == y).sum()
            if bar:
                bar.advance(task)
        if bar:
            bar.stop()
        n = steps_per_epoch * cfg.batch_size
        train_loss = loss_sum.item() / steps_per_epoch
        if not math.isfinite(train_loss):
            result.status = "diverged"
            break
        stats = EpochStats(epoch, train_loss, correct.item() / n, evaluate(model, data.val), time.perf_counter() - t0, opt.param_groups[0]["lr"])
        result.history.append(stats)
        if on_epoch:
            on_epoch(stats)
    model.eval()
    return result
