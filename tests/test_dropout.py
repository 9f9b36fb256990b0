"""The cheap Dropout masks of the bf16 CPU runtime: torch's Dropout in distribution, layout and gradient."""

import math

import pytest
import torch
from conftest import first
from torch import nn

from nas20k.core.dropout import CheapDropout, use_cheap_dropout
from nas20k.core.factory import PRESETS
from nas20k.core.runtime import Runtime
from nas20k.core.train import TrainConfig, train


@pytest.mark.parametrize("p", [0.01, 0.065, 0.15, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keeps_each_element_with_probability_1_minus_p_and_keeps_the_mean(p, dtype):
    torch.manual_seed(0)
    x = torch.ones(64, 16, 28, 28, dtype=dtype)
    y = CheapDropout(p).train()(x)
    kept = (y != 0).double().mean().item()
    sd = math.sqrt(p * (1 - p) / x.numel())
    assert abs(kept - (1 - p)) < 5 * sd, (kept, 1 - p, sd)
    # the kept ones scaled by 1/(1-p) (p in steps of 1/65536), rounded to the dtype as torch's Dropout rounds them
    values = torch.unique(y).tolist()
    assert values == [0, pytest.approx(nn.functional.dropout(x, p).max().item(), rel=2e-5)]
    assert abs(y.double().mean().item() - 1) < 5 * sd / (1 - p) + (4e-3 if dtype == torch.bfloat16 else 1e-6)


def test_masks_are_independent_of_position_and_of_each_other():
    """No lane or row of the 64-bit draws drops more than another (a biased lane would show as a stripe)."""
    torch.manual_seed(1)
    drop = CheapDropout(0.25).train()
    a, b = drop(torch.ones(4096, 4, 3)) == 0, drop(torch.ones(4096, 4, 3)) == 0
    sd = math.sqrt(0.25 * 0.75 / 4096)
    assert all(abs(a[:, i, j].double().mean().item() - 0.25) < 5 * sd for i in range(4) for j in range(3))
    both = (a & b).double().mean().item()  # two calls: independent masks
    assert abs(both - 0.25 ** 2) < 5 * math.sqrt(0.0625 * 0.9375 / a.numel())


def test_gradient_is_the_same_mask_and_layout_is_kept():
    torch.manual_seed(2)
    x = torch.randn(8, 6, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    y = CheapDropout(0.3).train()(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    scale = y.detach() / x.detach()  # 0 or 1/(1-p) per element: the same factor reaches the gradient
    assert torch.allclose(x.grad, scale)
    odd = torch.randn(3, 7, 5)[:, ::2]  # not dense, numel not a multiple of 4
    assert CheapDropout(0.3).train()(odd).shape == odd.shape


def test_eval_is_the_identity_and_seeds_repeat():
    x = torch.randn(4, 3, 8, 8)
    assert CheapDropout(0.3).eval()(x) is x
    masks = []
    for _ in range(2):
        torch.manual_seed(7)
        masks.append(CheapDropout(0.3).train()(torch.ones(1000)))
    assert torch.equal(*masks)


def test_swapped_in_place_and_the_weights_are_unchanged(mnist):
    """Only the runtime's choice: a model trained with the cheap masks has the plain model's state_dict keys, and
    a run with them trains (same seed, a different mask stream: close, not equal)."""
    model = PRESETS["small"].build()
    keys = list(model.state_dict())
    use_cheap_dropout(model)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(type(m) is CheapDropout and m.p == 0.05 for m in drops)
    assert list(model.state_dict()) == keys
    cfg, data = TrainConfig(epochs=1, batch_size=64), first(mnist, 512)
    plain = train(PRESETS["small"], cfg, data, runtime=Runtime(precision="bf16", channels_last=True))
    cheap = train(PRESETS["small"], cfg, data, runtime=Runtime(precision="bf16", channels_last=True,
                                                                 cheap_dropout=True))
    assert cheap.status == "complete"
    assert abs(cheap.history[0].train_loss - plain.history[0].train_loss) < 0.1
    assert list(cheap.model.state_dict()) == keys
