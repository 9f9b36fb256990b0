"""Seed replicates fused into one model (nas20k.fused) against the same replicates trained as separate models."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from fused_nets import build_fused, fuse_inputs, fuse_states, fused_loss, unfuse_state
from torch import nn

from nas20k.core.factory import ArchSpec
from nas20k.core.recipe import TrainConfig
from nas20k.core.train import _optimizer

N, B = 3, 8
SEEDS = (11, 22, 33)
# Tiny specs that between them cover every head, padding 0 and 1, conv bias on and off, 1x1 convs with and without
# BatchNorm (squeeze_bn), Dropout, the three activations, separable convs, several input channels and class counts.
SPECS = {
    "gap": ArchSpec(blocks=((4, 6), (6,)), transitions=(5,), head="gap", padding=(1, 0), bias=True, squeeze_bn=False,
                    dropout=0.2, dropout_after=(0,), image_size=10),
    "fc": ArchSpec(blocks=((4,), (6,)), transitions=(5,), head="fc", padding=(0, 1), bias=False, squeeze_bn=True,
                   in_channels=2, image_size=10, num_classes=4, activation="silu"),
    "conv-bn": ArchSpec(blocks=((4,), (6, 6)), transitions=(0,), head="conv", padding=(1, 1), squeeze_bn=True,
                        dropout=0.1, dropout_after=(1,), image_size=8, activation="gelu"),
    "conv": ArchSpec(blocks=((4, 4),), transitions=(), head="conv", padding=(0,), bias=False, image_size=8,
                     num_classes=3),
    "direct": ArchSpec(blocks=((4,), (5,)), transitions=(0,), head="direct", padding=(1, 0), bias=False,
                       dropout=0.3, dropout_after=(0,), image_size=8, num_classes=5),
    "separable": ArchSpec(blocks=((4, 6), (6,)), transitions=(0,), head="gap", padding=(1, 0), separable=True,
                          in_channels=2, dropout=0.1, dropout_after=(1,), image_size=10),
}
specs = pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())


def separate(spec: ArchSpec, dtype: torch.dtype = torch.float64) -> list[nn.Module]:
    """N plain models, each initialised from its own seed."""
    models = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        models.append(spec.build().to(dtype))
    return models


def fused_from(spec: ArchSpec, models: list[nn.Module]) -> nn.Module:
    dtype = next(models[0].parameters()).dtype
    model = build_fused(spec, len(models)).to(dtype)
    model.load_state_dict(fuse_states(spec, [m.state_dict() for m in models]), strict=True)
    return model


def train_without_dropout(*models: nn.Module) -> None:
    """Train mode (BatchNorm on batch statistics, running stats updated) with Dropout as the identity."""
    for model in models:
        model.train()
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.eval()


def inputs(spec: ArchSpec, seed: int, dtype: torch.dtype = torch.float64) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A different batch and different labels for each replicate."""
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(B, spec.in_channels, spec.image_size, spec.image_size, generator=g, dtype=dtype) for _ in SEEDS]
    return xs, torch.randint(spec.num_classes, (N, B), generator=g)


@specs
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_logits_equal_separate_models_in_train_and_eval_mode(spec, dtype):
    models = separate(spec, dtype)
    fused = fused_from(spec, models)
    train_without_dropout(fused, *models)
    xs, _ = inputs(spec, 0, dtype)
    out = fused(fuse_inputs(xs))
    assert out.shape == (B, N, spec.num_classes)
    alone = [m(x) for m, x in zip(models, xs, strict=True)]
    assert not torch.allclose(alone[0], alone[1])  # the replicates really differ, so a mix-up would show
    for r in range(N):
        torch.testing.assert_close(out[:, r], alone[r])
    # After that training forward the running statistics moved; in eval mode they are what normalizes.
    for model in (fused, *models):
        model.eval()
    xs, _ = inputs(spec, 1, dtype)
    out = fused(fuse_inputs(xs))
    for r, (m, x) in enumerate(zip(models, xs, strict=True)):
        torch.testing.assert_close(out[:, r], m(x))
    for r, state in enumerate(unfuse_state(spec, fused.state_dict(), N)):
        for key, value in models[r].state_dict().items():
            torch.testing.assert_close(state[key], value, msg=key)
            if key.endswith("running_var"):
                assert not torch.allclose(value, torch.ones_like(value))  # the statistics did move


def test_replicates_never_mix():
    spec = SPECS["fc"]
    fused = fused_from(spec, separate(spec))
    train_without_dropout(fused)
    xs, _ = inputs(spec, 2)
    before = fused(fuse_inputs(xs))
    xs[1] = torch.randn_like(xs[1])  # not an affine change of it: train-mode BatchNorm would normalize that away
    after = fused(fuse_inputs(xs))
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]], rtol=0, atol=1e-12)
    assert (after[:, 1] - before[:, 1]).abs().max() > 1e-3


@specs
@pytest.mark.parametrize("shared_targets, smoothing", [(False, 0.0), (True, 0.0), (False, 0.1)],
                         ids=["own-targets", "shared-targets", "smoothing"])
def test_loss_and_every_gradient_equal_separate_models(spec, shared_targets, smoothing):
    models = separate(spec)
    fused = fused_from(spec, models)
    train_without_dropout(fused, *models)
    xs, ys = inputs(spec, 3)
    if shared_targets:
        ys = ys[0]
    loss = fused_loss(fused(fuse_inputs(xs)), ys, label_smoothing=smoothing)
    losses = [F.cross_entropy(m(x), ys if shared_targets else ys[r], label_smoothing=smoothing)
              for r, (m, x) in enumerate(zip(models, xs, strict=True))]
    torch.testing.assert_close(loss, sum(losses))
    loss.backward()
    for each in losses:
        each.backward()
    grads = dict(fused.state_dict())  # buffers too, so unfuse_state sees a whole state dict
    grads.update({name: p.grad for name, p in fused.named_parameters()})
    for r, unfused in enumerate(unfuse_state(spec, grads, N)):
        for name, p in models[r].named_parameters():
            torch.testing.assert_close(unfused[name], p.grad, msg=name)
    assert any(p.grad.abs().max() > 1e-3 for p in models[0].parameters())


CONFIGS = {
    "sgd-nesterov": TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "sgd-momentum": TrainConfig(optimizer="sgd", lr=0.1, momentum=0.8, nesterov=False, weight_decay=1e-2),
    "adam": TrainConfig(optimizer="adam", lr=1e-2, weight_decay=1e-3),
    "adamw": TrainConfig(optimizer="adamw", lr=1e-2, weight_decay=1e-2),
}


@specs
@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_two_optimizer_steps_equal_separate_steps(spec, cfg):
    models = separate(spec)
    start = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    fused = fused_from(spec, models)
    train_without_dropout(fused, *models)
    fused_opt, opts = _optimizer(fused, cfg), [_optimizer(m, cfg) for m in models]
    for step in range(2):
        xs, ys = inputs(spec, 10 + step)
        fused_opt.zero_grad()
        fused_loss(fused(fuse_inputs(xs)), ys).backward()
        fused_opt.step()
        for r, (m, opt) in enumerate(zip(models, opts, strict=True)):
            opt.zero_grad()
            F.cross_entropy(m(xs[r]), ys[r]).backward()
            opt.step()
    for r, unfused in enumerate(unfuse_state(spec, fused.state_dict(), N)):
        state = models[r].state_dict()
        assert list(unfused) == list(state)
        for key, value in state.items():
            torch.testing.assert_close(unfused[key], value, msg=key)
        moved = max((state[k].double() - start[r][k].double()).abs().max().item() for k in state)
        assert moved > 1e-3  # the steps did something, so equality is not of two untouched models


@specs
def test_fuse_then_unfuse_gives_the_states_back_exactly(spec):
    models = separate(spec, torch.float32)
    xs, _ = inputs(spec, 4, torch.float32)
    for m, x in zip(models, xs, strict=True):  # non-default running statistics and batch counts
        m.train()(x)
    states = [m.state_dict() for m in models]
    fused = fuse_states(spec, states)
    model = build_fused(spec, N)
    assert sum(p.numel() for p in model.parameters()) == N * spec.num_params()
    model.load_state_dict(fused, strict=True)
    assert list(fused) == list(model.state_dict())
    back = unfuse_state(spec, fused, N)
    for state, original in zip(back, states, strict=True):
        assert list(state) == list(original)
        for key, value in original.items():
            assert state[key].dtype == value.dtype and torch.equal(state[key], value), key
        plain = spec.build()
        plain.load_state_dict(state, strict=True)
    back[0]["b1c1.weight"].add_(1)  # the unfused states are copies, not views of the fused one
    assert not torch.equal(back[0]["b1c1.weight"], states[0]["b1c1.weight"])


def test_fuse_refuses_what_it_cannot_represent():
    spec = SPECS["gap"]
    states = [m.state_dict() for m in separate(spec)]
    states[1]["b1c1_bn.num_batches_tracked"] = torch.tensor(5)
    with pytest.raises(ValueError, match="num_batches_tracked"):
        fuse_states(spec, states)
    with pytest.raises(ValueError, match="does not match"):
        fuse_states(SPECS["direct"], [m.state_dict() for m in separate(spec)])
    with pytest.raises(ValueError, match="shape"):
        unfuse_state(spec, fuse_states(spec, [m.state_dict() for m in separate(spec)]), 2)


def test_dropout_draws_its_own_mask_per_replicate():
    spec = replace(SPECS["gap"], dropout=0.5)
    torch.manual_seed(0)
    state = spec.build().state_dict()
    fused = build_fused(spec, N)
    fused.load_state_dict(fuse_states(spec, [state] * N))  # identical replicates on identical inputs
    seen = {}
    fused.b1c1_drop.register_forward_hook(lambda m, args, out: seen.update(inp=args[0], out=out))
    g = torch.Generator().manual_seed(5)
    x = torch.randn(B, 1, spec.image_size, spec.image_size, generator=g)
    fused.eval()
    same = fused(fuse_inputs([x] * N))
    torch.testing.assert_close(same[:, 1], same[:, 0])
    torch.testing.assert_close(same[:, 2], same[:, 0])
    fused.train()
    out = fused(fuse_inputs([x] * N))
    inp, dropped = seen["inp"], seen["out"] == 0
    live = (inp != 0).view(B, N, -1)
    masks = dropped.view(B, N, -1) & live
    for r in range(N):
        assert torch.equal(live[:, r], live[:, 0])  # same activations before the Dropout...
        assert 0.35 < masks[:, r].sum() / live[:, r].sum() < 0.65
    assert not torch.equal(masks[:, 0], masks[:, 1]) and not torch.equal(masks[:, 1], masks[:, 2])  # ...other masks
    assert not torch.allclose(out[:, 0], out[:, 1])
