"""Train one `ArchSpec` on in-memory MNIST.

The trainer knows nothing of the search: after every epoch it hands an `EpochStats` to a callback,
which may raise to stop the run (that is how the search prunes).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

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


def _progress(total: int, enabled: bool):  # noqa: ANN202 - a rich Progress or None
    if not (enabled and sys.stderr.isatty()):
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)


Step = Callable[[torch.Tensor], None]  # one training step on the batch of these train-set indices


def soft_targets(cfg: TrainConfig, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The teacher's log-probabilities at `cfg.temperature` on the clean training images `x`, computed once per run.

    Why clean images, not each augmented batch: a teacher forward pass per step would cost more than the small
    student's own step, and at the small rotations and shifts that small nets train with, the clean image's soft
    target is the augmented one's too. The teacher is a torch.export program, as `nas20k best --export` writes it,
    trained on the same training split (its val images are the student's)."""
    if not Path(cfg.teacher).is_file():
        raise RecipeError(f"teacher not found: {cfg.teacher}")
    try:
        teacher = torch.export.load(cfg.teacher).module().to(x.device)
    except Exception as e:  # a file torch.export cannot read: not a model.pt2
        raise RecipeError(f"teacher is not a model.pt2 export: {cfg.teacher} ({e.__class__.__name__})") from e
    with torch.no_grad():  # not inference_mode: the targets enter the loss that backward runs through
        logits = torch.cat([teacher(x[idx]) for idx in batches(len(x), batch_size)])
    return (logits.float() / cfg.temperature).log_softmax(1)


def _loss(forward: Callable[[torch.Tensor], torch.Tensor], cfg: TrainConfig, train: Split, idx: torch.Tensor,
          gen: torch.Generator, soft: torch.Tensor | None, loss_sum: torch.Tensor,
          correct: torch.Tensor) -> torch.Tensor:
    """The loss of batch `idx`, augmented; adds to the epoch's sums where they live (no host sync per step).
    `forward` may run in lower precision (Runtime.autocast); the loss is taken in fp32. With `soft` (the teacher's
    `soft_targets`), a `cfg.distill` share of it is Hinton's distillation term (KL at the temperature, times its
    square so its gradients keep their scale)."""
    x, y = augment(train.x[idx], cfg.rotate, cfg.translate, gen, cfg.scale), train.y[idx]
    out = forward(x).float()
    loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
    if soft is not None:
        t = cfg.temperature
        kd = F.kl_div((out / t).log_softmax(1), soft[idx], reduction="batchmean", log_target=True) * t * t
        loss = (1 - cfg.distill) * loss + cfg.distill * kd
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

    Data stays where `data` lives (load it onto `runtime`'s device). On a GPU with `runtime.cuda_graphs` each step
    replays one captured CUDA graph (`graphs.graphed_step`), else it runs eagerly; either way the epoch's loss is
    read back once, at its end. Only the training step follows `runtime.precision`; evaluation is fp32, so a run is
    scored as its exported model computes. Validation runs after the epochs in `eval_epochs` (None: every epoch;
    others get val_acc None: skipping one changes nothing else, as evaluating draws no random numbers), preceded by
    BatchNorm recalibration with `cfg.recalibrate_bn`. `test_last` > 0 also measures test accuracy in the last
    epochs, for the record (the score of a run is on validation only)."""
    cfg.validate()
    device = data.train.x.device
    steps_per_epoch = len(data.train) // cfg.batch_size
    if steps_per_epoch == 0:
        raise RecipeError(f"batch size {cfg.batch_size} is larger than the {len(data.train)} training images")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    model = spec.build().to(device,
                            memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
    if runtime.cheap_dropout:
        use_cheap_dropout(model)
    forward = _with_precision(torch.compile(model) if runtime.compile else model, runtime, device.type)
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, steps_per_epoch)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)

    soft = soft_targets(cfg, data.train.x) if cfg.distill else None

    def loss(idx: torch.Tensor) -> torch.Tensor:
        return _loss(forward, cfg, data.train, idx, gen, soft, loss_sum, correct)

    graphed = device.type == "cuda" and runtime.cuda_graphs
    step = graphed_step(model, opt, loss, cfg.batch_size, gen) if graphed else _eager_step(opt, loss)
    # The weights' moving average, when the recipe asks for one, is the model that is evaluated, scored and handed
    # back; its BatchNorm buffers are averaged too (and recalibrated before evaluation with `recalibrate_bn`).
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    scored = ema.module if ema else model
    eval_batch = EVAL_BATCH_CPU if device.type == "cpu" else 5000  # on a GPU one or two launches per split
    result = TrainResult(model=model, status="complete")
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        loss_sum.zero_()
        correct.zero_()
        bar = _progress(steps_per_epoch, progress)
        task = bar.add_task(f"epoch {epoch}/{cfg.epochs}", total=steps_per_epoch) if bar else None
        if bar:
            bar.start()
        for idx in batches(len(data.train), cfg.batch_size, gen):
            step(idx)
            sched.step()
            if ema:
                ema.update_parameters(model)
            if bar:
                bar.advance(task)
        if bar:
            bar.stop()
        n = steps_per_epoch * cfg.batch_size
        train_loss = loss_sum.item() / steps_per_epoch  # the one sync of the epoch's steps
        if not math.isfinite(train_loss):
            result.status = "diverged"
            break
        tested = epoch > cfg.epochs - test_last
        if cfg.recalibrate_bn and (tested or eval_epochs is None or epoch in eval_epochs):
            recalibrate_bn(scored, data.train.x[:RECALIBRATE_IMAGES], eval_batch)
        val_acc = evaluate(scored, data.val, eval_batch) if eval_epochs is None or epoch in eval_epochs else None
        test_acc = evaluate(scored, data.test, eval_batch) if tested else None
        stats = EpochStats(epoch, train_loss, correct.item() / n, val_acc, time.perf_counter() - t0,
                           opt.param_groups[0]["lr"], test_acc)
        result.history.append(stats)
        if on_epoch:
            on_epoch(stats)
    model.zero_grad(set_to_none=True)  # with graphs they live in the graph's memory pool; not needed after training
    # plain fp32 weights, whatever the run's layout
    result.model = scored.to(memory_format=torch.contiguous_format).eval()
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
