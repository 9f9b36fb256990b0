"""N seed replicates of one `ArchSpec` fused into a single model (HFTA, Wang et al., MLSys 2021).

Why: a small MNIST CNN leaves most of a device idle, and confirming a candidate trains it several times with
different seeds. Widening every layer N ways with grouped convolutions runs the N replicates as one model: one
kernel launch per layer instead of N, with the same arithmetic per replicate.

Layout: replicate r owns channels [r * c, (r + 1) * c) of every activation (replicate-major). So
- the input is the N replicates' batches concatenated on the channel axis, (B, N * in_channels, H, W) (`fuse_inputs`);
- convs are grouped (groups=N): group r reads only replicate r's channels;
- BatchNorm2d(N * c) keeps per-channel statistics, hence each replicate's exactly; the activation, Dropout
  (elementwise: each replicate draws its own mask), max-pool and GAP act per channel and are kept as they are;
- flattening (B, N * c, s, s) lays replicate r's c * s * s features out contiguously in the plain model's (c, h, w)
  order, so the `fc` head's linear layer becomes a `GroupedLinear` over N contiguous slices;
- the output is (B, N, num_classes): logits[:, r] are replicate r's.

Every fused parameter and buffer is its N plain counterparts concatenated on dim 0 (`num_batches_tracked`, one
count, is shared), and the fused model's state-dict keys are the plain model's, so `fuse_states` and
`unfuse_state` are concatenation and slicing checked against `factory.plan`, the same walk `spec.build()` uses.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas20k.core.factory import ArchSpec, Layer, plan


class GroupedLinear(nn.Module):
    """N independent linear layers over N contiguous slices of the features: (B, N * in) -> (B, N * out).

    `weight` is (N * out, in), the N plain weights stacked on dim 0 (as a grouped conv's), and is initialised as N
    `nn.Linear(in, out)` would be. One batched matmul, so replicates never mix."""

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.n, self.in_features, self.out_features = n, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n * out_features, in_features))
        self.bias = nn.Parameter(torch.empty(n * out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # fan_in = in_features, as nn.Linear's
        bound = 1 / math.sqrt(self.in_features)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n = x.shape[0], self.n
        w = self.weight.view(n, self.out_features, self.in_features).transpose(1, 2)  # (N, in, out)
        y = torch.baddbmm(self.bias.view(n, 1, self.out_features), x.view(b, n, self.in_features).transpose(0, 1), w)
        return y.transpose(0, 1).reshape(b, n * self.out_features)

    def extra_repr(self) -> str:
        return f"n={self.n}, in_features={self.in_features}, out_features={self.out_features}"


def _fused_module(layer: Layer, n: int) -> nn.Module:
    if layer.kind in ("conv3", "conv1"):
        k = 3 if layer.kind == "conv3" else 1
        return nn.Conv2d(n * layer.c_in, n * layer.c_out, k, padding=layer.pad, bias=layer.bias,
                         groups=n * layer.groups)
    if layer.kind == "bn":
        return nn.BatchNorm2d(n * layer.c_out)
    if layer.kind == "linear":
        return GroupedLinear(n, layer.c_in, layer.c_out)
    return layer.module()  # activation, dropout, pool, gap, flatten: per element or per channel already


def build_fused(spec: ArchSpec, n: int) -> nn.Sequential:
    """`spec`'s model widened N ways: input (B, N * in_channels, H, W), output logits (B, N, num_classes).

    Layer names are the plain model's (plus a parameter-free `replicas` unflatten at the end), so its state dict
    has the plain keys. Fresh weights are drawn as N plain models' would be, but not from the same seeds: load
    `fuse_states` of N seeded `spec.build()` models to reproduce them."""
    if n < 1:
        raise ValueError(f"need at least one replicate, got {n}")
    modules = OrderedDict((layer.name, _fused_module(layer, n)) for layer in plan(spec))
    modules["replicas"] = nn.Unflatten(1, (n, spec.num_classes))
    return nn.Sequential(modules)


def fuse_inputs(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The fused model's input from the N replicates' batches (each (B, in_channels, H, W), augmented as it likes)."""
    return torch.cat(list(xs), dim=1)


def _entries(spec: ArchSpec) -> list[tuple[str, tuple[int, ...]]]:
    """Key and shape of every entry of `spec.build().state_dict()`, in its order, from the layer plan."""
    entries: list[tuple[str, tuple[int, ...]]] = []
    for layer in plan(spec):
        name, c_out = layer.name, (layer.c_out,)
        if layer.kind in ("conv3", "conv1"):
            k = 3 if layer.kind == "conv3" else 1
            entries.append((f"{name}.weight", (layer.c_out, layer.c_in // layer.groups, k, k)))
            entries += [(f"{name}.bias", c_out)] if layer.bias else []
        elif layer.kind == "linear":
            entries += [(f"{name}.weight", (layer.c_out, layer.c_in)), (f"{name}.bias", c_out)]
        elif layer.kind == "bn":
            entries += [(f"{name}.{p}", c_out) for p in ("weight", "bias", "running_mean", "running_var")]
            entries.append((f"{name}.num_batches_tracked", ()))
    return entries


def _check_keys(state: dict, expected: list[tuple[str, tuple[int, ...]]], what: str) -> None:
    missing = [k for k, _ in expected if k not in state]
    unexpected = sorted(set(state) - {k for k, _ in expected})
    if missing or unexpected:
        raise ValueError(f"{what} does not match the spec: missing {missing}, unexpected {unexpected}")
    for key, shape in expected:
        if tuple(state[key].shape) != shape:
            raise ValueError(f"{what}: {key} has shape {tuple(state[key].shape)}, the spec gives {shape}")


def fuse_states(spec: ArchSpec, states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The fused model's state dict from N plain `spec.build()` state dicts (replicate r = states[r]), each keeping
    its own initialisation and BatchNorm statistics. The fused model counts BatchNorm batches once, so their
    `num_batches_tracked` must agree (they do for replicates built or trained in step)."""
    if not states:
        raise ValueError("need at least one state dict to fuse")
    entries = _entries(spec)
    for r, state in enumerate(states):
        _check_keys(state, entries, f"state dict of replicate {r}")
    fused: dict[str, torch.Tensor] = OrderedDict()
    for key, shape in entries:
        parts = [state[key] for state in states]
        if shape:
            fused[key] = torch.cat(parts, dim=0)
        elif all(torch.equal(p, parts[0]) for p in parts):
            fused[key] = parts[0].clone()
        else:
            counts = [p.item() for p in parts]
            raise ValueError(f"{key} differs between replicates ({counts}): the fused model holds one count")
    return fused


def unfuse_state(spec: ArchSpec, fused_state: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    """N plain state dicts, each loading into `spec.build()` (strict): replicate r's slice of every entry, copied,
    so each replicate exports as its own plain model."""
    entries = _entries(spec)
    _check_keys(fused_state, [(k, (n * s[0], *s[1:]) if s else s) for k, s in entries], "fused state dict")
    states: list[dict[str, torch.Tensor]] = [OrderedDict() for _ in range(n)]
    for key, shape in entries:
        for r, state in enumerate(states):
            tensor = fused_state[key]
            state[key] = tensor.narrow(0, r * shape[0], shape[0]).clone() if shape else tensor.clone()
    return states


def fused_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The sum over replicates of each one's mean cross-entropy, so each replicate's gradient is the one it would
    get trained alone (the sum's derivative by replicate r's logits is r's own loss's).

    `logits` (B, N, classes) as `build_fused` gives them; `targets` (N, B), one row per replicate, or (B,) shared by
    all. Replicate r's loss alone: `F.cross_entropy(logits[:, r], targets[r])`."""
    b, n, classes = logits.shape
    if targets.dim() == 1:
        targets = targets.unsqueeze(0).expand(n, b)
    if targets.shape != (n, b):
        raise ValueError(f"targets must be (N, B) = {(n, b)} or (B,) = ({b},), got {tuple(targets.shape)}")
    total = F.cross_entropy(logits.reshape(b * n, classes), targets.t().reshape(b * n),
                            label_smoothing=label_smoothing, reduction="sum")
    return total / b  # every replicate has B samples: the sum of their means
