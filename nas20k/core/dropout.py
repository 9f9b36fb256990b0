"""Dropout whose mask costs a third of torch's on the CPU, for the bf16 runtime (`Runtime.cheap_dropout`).

Why: torch's CPU Dropout draws its mask with `bernoulli_`, one Mersenne-Twister draw and a float compare per
element, plus a scale pass: in a 16k-param net at batch 256 that was 23 % of the training step (torch.profiler).
Here one 64-bit draw gives four 16-bit lanes, each kept when at or above `p` in 1/65536 steps, and one multiply
by the 0-or-1/(1-p) mask does the rest; backward is that same multiply. The mask has the distribution of torch's
(keep rate 1 - p to 1/65536, independent per element) from another stream of the same seeded generator, so a run
is as reproducible as before but not bit-identical to one with torch's Dropout: that is why fp32, today's
path, keeps torch's. The modules hold no state, so weights, `state_dict` and exports are the same either way.
"""

from __future__ import annotations

import torch
from torch import nn

LANES = 4  # 16-bit lanes in one int64 draw
STEPS = 1 << 16


class CheapDropout(nn.Dropout):
    """`nn.Dropout` (elementwise, scaled by 1/(1-p) in training, the identity in eval) with the cheaper mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        dense = x if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()
        dropped = round(self.p * STEPS)  # p in steps of 1/65536; the scale follows the rounded p, so the mean is kept
        # the scale as a Python float: a bf16 mask of 0 or 1/(1-p) would round it by up to 0.4 %
        return (dense * keep_mask(dense, dropped)).mul_(STEPS / (STEPS - dropped))


def keep_mask(x: torch.Tensor, dropped: int) -> torch.Tensor:
    """A 0/1 mask in `x`'s dtype, shape and (dense) memory layout, 0 with probability `dropped`/65536 per element,
    drawn from torch's default generator (`x`'s device's)."""
    n = x.numel()
    words = torch.empty((n + LANES - 1) // LANES, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
    mask = torch.empty(n, dtype=x.dtype, device=x.device)
    torch.ge(words.view(torch.int16)[:n], dropped - STEPS // 2, out=mask)  # int16 lanes, uniform on [-2^15, 2^15)
    return mask.as_strided(x.shape, x.stride())


def use_cheap_dropout(model: nn.Module) -> nn.Module:
    """Swap every `nn.Dropout` in `model` for a `CheapDropout` of the same `p`, in place."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, CheapDropout(child.p))
    return model
