"""Train one `ArchSpec` on in-memory MNIST.

The trainer knows nothing of the search: after every epoch it hands an `EpochStats` to a callback,
which may raise to stop the run (that is how the search prunes).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nas20k.core.data import Mnist, Split, augment, batches
from nas20k.core.dropout import use_cheap_dropout
from nas20k.core.factory import ArchSpec
from nas20k.core.graphs import graphed_step
from nas20k.core.recipe import RecipeError, TrainConfig
from nas20k.core.runtime import Runtime

# clean training images BatchNorm's statistics are recomputed on (more changed nothing: benchmarks/bn_recalibration.py)
RECALIBRATE_IMAGES = 10_000
# images per forward pass when evaluating or recalibrating on the CPU: an evaluated epoch takes 1.29x less time than
# in batches of 1,000 (benchmarks/evaluation.py), probably as a layer's activations come closer to fitting the caches
EVAL_BATCH_CPU = 500


@dataclass
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_acc: float | None  # None on an epoch that was not evaluated (train's `eval_epochs`)
    seconds: float
    lr: float
    test_acc: float | None = None  # only in the last `test_last` epochs, for the record: nothing selects on it


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


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> None:
    """Recompute every BatchNorm's running statistics as the plain average over `x` (clean images), Dropout off.

    Why: during training they average augmented images with Dropout on, and Dropout before a BatchNorm shifts the
    variance it sees (Li et al., "Understanding the Disharmony between Dropout and Batch Normalization by Variance
    Shift", 2019); at test time the inputs are clean and Dropout is off. torch's `swa_utils.update_bn` recomputes
    them in train mode, Dropout on, which measured no better than not recalibrating (benchmarks/bn_recalibration.py).
    Training itself is unchanged: in train mode BatchNorm normalizes with batch statistics, and nothing here draws
    random numbers. Leaves the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
        m.train()
    for idx in batches(len(x), batch_size):
        model(x[idx])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig,
               steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per batch."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    if cfg.schedule == "step":
        drop_epoch = max(1, round(cfg.drop_at * cfg.epochs))
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[drop_epoch * steps_per_epoch], gamma=0.1)
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


@contextlib.contextmanager
def _bar(description: str, total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    """A transient rich progress bar over one epoch's steps on a terminal (`nas20k train`); elsewhere a no-op."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


Step = Callable[[torch.Tensor], None]  # one training step on the batch of these train-set indices


def _loss(forward: Callable[[torch.Tensor], torch.Tensor], cfg: TrainConfig, train: Split, idx: torch.Tensor,
          gen: torch.Generator, loss_sum: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """The loss of batch `idx`, augmented; adds to the epoch's sums where they live (no host sync per step).
    `forward` may run in lower precision (Runtime.autocast); the loss is taken in fp32."""
    x, y = augment(train.x[idx], cfg.rotate, cfg.translate, gen, cfg.scale), train.y[idx]
    out = forward(x).float()
    loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
    loss_sum.add_(loss.detach())
    correct.add_((out.detach().argmax(1) == y).sum())
    return loss


def _eager_step(opt: torch.optim.Optimizer, loss: Callable[[torch.Tensor], torch.Tensor]) -> Step:
    """The CPU path, and the GPU one without graphs."""

    def step(idx: torch.Tensor) -> None:
        value = loss(idx)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()

    return step


@dataclass
class _Sums:
    """An epoch's loss and correct-prediction sums, kept where the data lives: read once, at the epoch's end."""

    loss: torch.Tensor
    correct: torch.Tensor

    @classmethod
    def on(cls, device: torch.device) -> _Sums:
        return cls(torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device))

    def zero(self) -> None:
        self.loss.zero_()
        self.correct.zero_()


def _build(spec: ArchSpec, runtime: Runtime, device: torch.device) -> nn.Module:
    """The model on the data's device, in the runtime's memory layout and Dropout masks."""
    layout = torch.channels_last if runtime.channels_last else torch.preserve_format
    model = spec.build().to(device, memory_format=layout)
    if runtime.cheap_dropout:
        use_cheap_dropout(model)
    return model


def _training_step(model: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig, train_split: Split,
                   gen: torch.Generator, sums: _Sums, runtime: Runtime) -> Step:
    """One step on a batch of indices: a replayed CUDA graph on a GPU with `runtime.cuda_graphs`, else eager."""
    device = train_split.x.device
    forward = _with_precision(torch.compile(model) if runtime.compile else model, runtime, device.type)

    def loss(idx: torch.Tensor) -> torch.Tensor:
        return _loss(forward, cfg, train_split, idx, gen, sums.loss, sums.correct)

    if device.type == "cuda" and runtime.cuda_graphs:
        return graphed_step(model, opt, loss, cfg.batch_size, gen)
    return _eager_step(opt, loss)


def _scores(model: nn.Module, cfg: TrainConfig, data: Mnist, validate: bool,
            test: bool) -> tuple[float | None, float | None]:
    """An epoch's val and test accuracy (None where not measured), after BatchNorm recalibration
    (`cfg.recalibrate_bn`) when either is measured."""
    batch = EVAL_BATCH_CPU if data.train.x.device.type == "cpu" else 5000  # on a GPU one or two launches per split
    if cfg.recalibrate_bn and (validate or test):
        recalibrate_bn(model, data.train.x[:RECALIBRATE_IMAGES], batch)
    return (evaluate(model, data.val, batch) if validate else None,
            evaluate(model, data.test, batch) if test else None)


def train(
    spec: ArchSpec,
    cfg: TrainConfig,
    data: Mnist,
    on_epoch: Callable[[EpochStats], None] | None = None,
    *,
    runtime: Runtime = Runtime(),
    test_last: int = 0,
    eval_epochs: Collection[int] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train for `cfg.epochs` (fewer if the loss goes NaN/inf: status "diverged"); the model ends in eval mode.

    Data stays where `data` lives (load it onto `runtime`'s device). Only the training step follows
    `runtime.precision`; evaluation is fp32, so a run is scored as its exported model computes. Validation runs
    after the epochs in `eval_epochs` (None: every epoch; others get val_acc None: skipping one changes nothing
    else, as evaluating draws no random numbers). `test_last` > 0 also measures test accuracy in the last epochs,
    for the record (the score of a run is on validation only)."""
    cfg.validate()
    steps = len(data.train) // cfg.batch_size
    if steps == 0:
        raise RecipeError(f"batch size {cfg.batch_size} is larger than the {len(data.train)} training images")
    device = data.train.x.device
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    model = _build(spec, runtime, device)
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, steps)
    sums = _Sums.on(device)
    step = _training_step(model, opt, cfg, data.train, gen, sums, runtime)
    result = TrainResult(model=model, status="complete")
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        sums.zero()
        with _bar(f"epoch {epoch}/{cfg.epochs}", steps, progress) as advance:
            for idx in batches(len(data.train), cfg.batch_size, gen):
                step(idx)
                sched.step()
                advance()
        train_loss = sums.loss.item() / steps  # the one sync of the epoch's steps
        if not math.isfinite(train_loss):
            result.status = "diverged"
            break
        val_acc, test_acc = _scores(model, cfg, data, eval_epochs is None or epoch in eval_epochs,
                                    epoch > cfg.epochs - test_last)
        stats = EpochStats(epoch, train_loss, sums.correct.item() / (steps * cfg.batch_size), val_acc,
                           time.perf_counter() - t0, opt.param_groups[0]["lr"], test_acc)
        result.history.append(stats)
        if on_epoch:
            on_epoch(stats)
    model.zero_grad(set_to_none=True)  # with graphs they live in the graph's memory pool; not needed after training
    result.model = model.to(memory_format=torch.contiguous_format).eval()  # plain fp32 weights, whatever the layout
    return result


def _with_precision(forward: Callable[[torch.Tensor], torch.Tensor], runtime: Runtime,
                    device_type: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The training forward pass under the runtime's precision; evaluation calls the model itself, in fp32, so a
    run is scored as the exported model computes."""
    if runtime.precision == "fp32":
        return forward

    def run(x: torch.Tensor) -> torch.Tensor:
        with runtime.autocast(device_type):
            return forward(x)

    return run
