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
from nas20k.errors import UserError
from nas20k.factory import ArchSpec
from nas20k.runtime import Runtime

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "step", "none")
MAX_EPOCHS = 1000  # the one epoch limit, for recipes and budgets alike
RECALIBRATE_IMAGES = 10_000  # clean training images BatchNorm's statistics are recomputed on (more changed nothing: benchmarks/bn_recalibration.py)


class RecipeError(UserError):
    """A training recipe that cannot run (bad field or value); one readable line."""


@dataclass
class TrainConfig:
    """The training recipe a candidate carries. How it runs (device, compile, graphs) is `runtime.Runtime`."""

    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (momentum, optionally nesterov) | adam | adamw
    lr: float = 0.05  # peak learning rate (OneCycle's max_lr; the start for step/none)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | step (x0.1 once, after drop_at of the epochs) | none
    drop_at: float = 0.5  # step schedule: fraction of the epochs after which the rate drops 10x (scales with epochs)
    label_smoothing: float = 0.0
    rotate: float = 10.0  # random rotation, +-degrees
    translate: float = 1.0  # random shift, +-pixels
    recalibrate_bn: bool = True  # before each evaluation, BatchNorm statistics from clean images, Dropout off (`recalibrate_bn`)
    seed: int = 0

    def validate(self) -> TrainConfig:
        checks = [
            (1 <= self.epochs <= MAX_EPOCHS, f"epochs must be between 1 and {MAX_EPOCHS}, got {self.epochs}"),
            (self.batch_size >= 2, f"batch size must be >= 2, got {self.batch_size}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (math.isfinite(self.lr) and self.lr > 0, f"learning rate must be a finite number > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0, f"weight decay must be a finite number >= 0, got {self.weight_decay}"),
            (0 <= self.rotate <= 180, f"rotate must be between 0 and 180 degrees, got {self.rotate}"),
            (math.isfinite(self.translate) and self.translate >= 0, f"translate must be a finite number of pixels >= 0, got {self.translate}"),
            (0 < self.drop_at < 1, f"drop_at must be in (0, 1), got {self.drop_at}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RecipeError(message)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise RecipeError(f"a recipe must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise RecipeError(f"unknown recipe field(s): {', '.join(sorted(unknown))}")
        # A recipe recorded before `recalibrate_bn` existed was trained and scored without it: re-running it (a confirm
        # seed of an older study, `nas20k train --recipe` of an older export) must do the same.
        return cls(**{"recalibrate_bn": False, **d})


@dataclass
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_acc: float
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
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


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
        drop_epoch = max(1, round(cfg.drop_at * cfg.epochs))
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[drop_epoch * steps_per_epoch], gamma=0.1)
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


def _progress(total: int, enabled: bool):  # noqa: ANN202 - a rich Progress or None
    if not (enabled and sys.stderr.isatty()):
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)


Step = Callable[[torch.Tensor], None]  # one training step on the batch of these train-set indices


def _loss(forward: Callable[[torch.Tensor], torch.Tensor], cfg: TrainConfig, train: Split, idx: torch.Tensor,
          gen: torch.Generator, loss_sum: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """The loss of batch `idx`, augmented; adds to the epoch's sums where they live (no host sync per step)."""
    x, y = augment(train.x[idx], cfg.rotate, cfg.translate, gen), train.y[idx]
    out = forward(x)
    loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
    loss_sum.add_(loss.detach())
    correct.add_((out.detach().argmax(1) == y).sum())
    return loss


def _eager_step(forward: Callable[[torch.Tensor], torch.Tensor], opt: torch.optim.Optimizer, cfg: TrainConfig,
                train: Split, gen: torch.Generator, loss_sum: torch.Tensor, correct: torch.Tensor) -> Step:
    """The CPU path, and the GPU one without graphs."""

    def step(idx: torch.Tensor) -> None:
        loss = _loss(forward, cfg, train, idx, gen, loss_sum, correct)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _momentum(group: dict) -> float:
    """SGD's momentum or Adam's beta1: what OneCycle cycles."""
    return group["betas"][0] if "betas" in group else group["momentum"]


def _tensor_update(opt: torch.optim.Optimizer, lr: torch.Tensor, mom: torch.Tensor) -> tuple[Callable[[], None], list[torch.Tensor]]:
    """`opt.step()` for its one param group, written with foreach ops that read the learning rate and the momentum
    (SGD) / beta1 (Adam) from the 0-d device tensors `lr` and `mom`, so a CUDA graph can capture it.

    Why not torch's own step: SGD turns a tensor lr into a Python number (`.item()`: a sync, not allowed under
    capture), and OneCycle assigns Adam a new `betas` tuple every step, which a captured step would never read: its
    scheduled values would freeze. Same formulas as torch's SGD (dampening 0) and Adam/AdamW (no amsgrad), with
    torch's own first step: a zero momentum buffer times momentum plus the gradient is the gradient.
    Returns the update and the state it keeps (zeros: a fresh optimizer)."""
    group = opt.param_groups[0]
    params, wd = group["params"], group["weight_decay"]
    avg = [torch.zeros_like(p) for p in params]  # SGD's momentum buffer / Adam's first moment
    if isinstance(opt, torch.optim.SGD):
        nesterov = group["nesterov"]

        @torch.no_grad()
        def sgd() -> None:
            grads = torch._foreach_add([p.grad for p in params], params, alpha=wd)
            torch._foreach_mul_(avg, mom)
            torch._foreach_add_(avg, grads)
            if nesterov:
                torch._foreach_add_(grads, torch._foreach_mul(avg, mom))
            torch._foreach_sub_(params, torch._foreach_mul(grads if nesterov else avg, lr))

        return sgd, avg

    sq = [torch.zeros_like(p) for p in params]  # Adam's second moment
    t = torch.zeros((), device=lr.device)  # Adam's step count
    beta2, eps, decoupled = group["betas"][1], group["eps"], group["decoupled_weight_decay"]

    @torch.no_grad()
    def adam() -> None:
        grads = [p.grad for p in params]
        if decoupled:  # AdamW
            torch._foreach_mul_(params, 1 - lr * wd)
        else:
            grads = torch._foreach_add(grads, params, alpha=wd)
        t.add_(1)
        torch._foreach_mul_(avg, mom)
        torch._foreach_add_(avg, torch._foreach_mul(grads, 1 - mom))
        torch._foreach_mul_(sq, beta2)
        torch._foreach_addcmul_(sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_div(torch._foreach_sqrt(sq), (1 - beta2**t).sqrt())
        torch._foreach_add_(denom, eps)
        steps = torch._foreach_div(avg, denom)
        torch._foreach_mul_(steps, lr / (1 - mom**t))
        torch._foreach_sub_(params, steps)

    return adam, [*avg, *sq, t]


WARMUP_STEPS = 3  # steps run on a side stream before capture, as torch's CUDA graphs recipe does (cuDNN/cuBLAS set-up)


def _graphed_step(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], opt: torch.optim.Optimizer, cfg: TrainConfig,
                  train: Split, gen: torch.Generator, loss_sum: torch.Tensor, correct: torch.Tensor) -> Step:
    """The whole step (augment, forward, loss, backward, update, epoch sums) captured once as a CUDA graph and
    replayed per batch: eagerly, a step of these small nets is ~3.5 ms of kernel launches and Python at any batch size.

    Between replays the host only writes the batch's indices and the schedule's lr/momentum (still torch's schedulers,
    stepped on `opt`, whose own `step()` is not used) into static tensors. The random draws stay as in the eager path:
    `gen` is registered with the graph (the default generator, for Dropout, torch registers itself), so each replay
    draws fresh numbers. The warm-up steps are undone (weights, BatchNorm statistics, optimizer state, RNG) so training
    starts where the eager path would."""
    device = train.x.device
    group = opt.param_groups[0]
    opt.step()  # no gradients yet, so no change: only tells the scheduler the optimizer has stepped (else it warns)
    model.train()  # the graph bakes in the mode: Dropout on, BatchNorm on batch statistics
    idx = torch.arange(cfg.batch_size, device=device)
    lr, mom = torch.full((), group["lr"], device=device), torch.full((), _momentum(group), device=device)
    update, opt_state = _tensor_update(opt, lr, mom)

    def body() -> None:
        _loss(forward, cfg, train, idx, gen, loss_sum, correct).backward()
        update()

    gens = (gen, torch.cuda.default_generators[device.index])
    rng = [g.get_state() for g in gens]
    saved = [t.clone() for t in model.state_dict().values()]
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.device(device), torch.cuda.stream(side):  # a study worker may train on cuda:1 while cuda:0 is current
        for _ in range(WARMUP_STEPS):
            model.zero_grad(set_to_none=True)
            body()
        for g, state in zip(gens, rng):
            g.set_state(state)  # host-side offsets: capture does not advance them, each replay does
        model.zero_grad(set_to_none=True)  # so the captured backward writes fresh gradients instead of accumulating
        graph.register_generator_state(gen)
        with torch.cuda.graph(graph, stream=side):
            body()
    torch.cuda.current_stream(device).wait_stream(side)
    with torch.no_grad():
        for t, s in zip(model.state_dict().values(), saved):
            t.copy_(s)
        for t in opt_state:
            t.zero_()

    return _Replay(graph, group, idx, lr, mom, opt_state)


@dataclass
class _Replay:
    """One training step: write the batch's indices and the schedule's lr/momentum into the static tensors, replay.

    It holds every tensor the graph addresses that the model and data do not own (the optimizer's state among
    them): the graph keeps raw addresses, so a buffer freed while the graph lives hands its memory to the next
    allocation, and each replay then writes momentum over, say, the next epoch's batch permutation."""

    graph: torch.cuda.CUDAGraph
    group: dict  # the optimizer's param group, where torch's scheduler writes lr and momentum
    idx: torch.Tensor
    lr: torch.Tensor
    mom: torch.Tensor
    state: list[torch.Tensor]

    def __call__(self, batch: torch.Tensor) -> None:
        self.idx.copy_(batch)
        self.lr.fill_(self.group["lr"])
        self.mom.fill_(_momentum(self.group))
        self.graph.replay()


def train(
    spec: ArchSpec,
    cfg: TrainConfig,
    data: Mnist,
    on_epoch: Callable[[EpochStats], None] | None = None,
    *,
    runtime: Runtime = Runtime(),
    test_last: int = 0,
    progress: bool = False,
) -> TrainResult:
    """Train for `cfg.epochs` (fewer if the loss goes NaN/inf: status "diverged"); the model ends in eval mode.

    Data stays where `data` lives (load it onto `runtime`'s device). On a GPU with `runtime.cuda_graphs` each step
    replays one captured CUDA graph (`_graphed_step`), else it runs eagerly; either way the epoch's loss is read
    back once, at its end. With `cfg.recalibrate_bn`, BatchNorm's statistics are recomputed on clean training
    images before each evaluation. `test_last` > 0 also measures test accuracy in the last epochs, for the record
    (the score of a run is on validation only)."""
    cfg.validate()
    device = data.train.x.device
    steps_per_epoch = len(data.train) // cfg.batch_size
    if steps_per_epoch == 0:
        raise RecipeError(f"batch size {cfg.batch_size} is larger than the {len(data.train)} training images")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    model = spec.build().to(device)
    forward = torch.compile(model) if runtime.compile else model
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, steps_per_epoch)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    if device.type == "cuda" and runtime.cuda_graphs:
        step = _graphed_step(model, forward, opt, cfg, data.train, gen, loss_sum, correct)
    else:
        step = _eager_step(forward, opt, cfg, data.train, gen, loss_sum, correct)
    eval_batch = 1000 if device.type == "cpu" else 5000  # on a GPU one or two launches per split; the CPU keeps its memory small
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
            if bar:
                bar.advance(task)
        if bar:
            bar.stop()
        n = steps_per_epoch * cfg.batch_size
        train_loss = loss_sum.item() / steps_per_epoch  # the one sync of the epoch's steps
        if not math.isfinite(train_loss):
            result.status = "diverged"
            break
        if cfg.recalibrate_bn:
            recalibrate_bn(model, data.train.x[:RECALIBRATE_IMAGES], eval_batch)
        test_acc = evaluate(model, data.test, eval_batch) if epoch > cfg.epochs - test_last else None
        stats = EpochStats(epoch, train_loss, correct.item() / n, evaluate(model, data.val, eval_batch), time.perf_counter() - t0, opt.param_groups[0]["lr"], test_acc)
        result.history.append(stats)
        if on_epoch:
            on_epoch(stats)
    model.zero_grad(set_to_none=True)  # with graphs they live in the graph's memory pool; nobody needs them after training
    model.eval()
    return result
