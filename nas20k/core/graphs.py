"""The CUDA-graph training step: the whole step (augment, forward, loss, backward, update, epoch sums) captured
once and replayed per batch. Eagerly, a step of these small nets is ~3.5 ms of kernel launches and Python at any
batch size; replayed, the host only writes the batch's indices and the schedule's lr/momentum."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


def _momentum(group: dict) -> float:
    """SGD's momentum or Adam's beta1: what OneCycle cycles."""
    return group["betas"][0] if "betas" in group else group["momentum"]


def _tensor_update(opt: torch.optim.Optimizer, lr: torch.Tensor,
                   mom: torch.Tensor) -> tuple[Callable[[], None], list[torch.Tensor]]:
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


def graphed_step(model: nn.Module, opt: torch.optim.Optimizer, loss: Callable[[torch.Tensor], torch.Tensor],
                 batch_size: int, gen: torch.Generator) -> Callable[[torch.Tensor], None]:
    """`loss(idx)` (the batch's loss, adding to the epoch's sums), its backward and the optimizer update, captured
    once as a CUDA graph; returns the step that replays it for a batch of indices.

    Between replays the host only writes the batch's indices and the schedule's lr/momentum (still torch's schedulers,
    stepped on `opt`, whose own `step()` is not used) into static tensors. The random draws stay as in the eager path:
    `gen` is registered with the graph (the default generator, for Dropout, torch registers itself), so each replay
    draws fresh numbers. The warm-up steps are undone (weights, BatchNorm statistics, optimizer state, RNG) so training
    starts where the eager path would."""
    device = next(model.parameters()).device
    group = opt.param_groups[0]
    opt.step()  # no gradients yet, so no change: only tells the scheduler the optimizer has stepped (else it warns)
    model.train()  # the graph bakes in the mode: Dropout on, BatchNorm on batch statistics
    idx = torch.arange(batch_size, device=device)
    lr, mom = torch.full((), group["lr"], device=device), torch.full((), _momentum(group), device=device)
    update, opt_state = _tensor_update(opt, lr, mom)

    def body() -> None:
        loss(idx).backward()
        update()

    gens = (gen, torch.cuda.default_generators[device.index])
    rng = [g.get_state() for g in gens]
    saved = [t.clone() for t in model.state_dict().values()]
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    graph = torch.cuda.CUDAGraph()
    # a study worker may train on cuda:1 while cuda:0 is current
    with torch.cuda.device(device), torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            model.zero_grad(set_to_none=True)
            body()
        for g, state in zip(gens, rng, strict=True):
            g.set_state(state)  # host-side offsets: capture does not advance them, each replay does
        model.zero_grad(set_to_none=True)  # so the captured backward writes fresh gradients instead of accumulating
        graph.register_generator_state(gen)
        # thread_local: worker threads of the same process keep launching on their own streams during the capture
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            body()
    torch.cuda.current_stream(device).wait_stream(side)
    with torch.no_grad():
        for t, s in zip(model.state_dict().values(), saved, strict=True):
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
