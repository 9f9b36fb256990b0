import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nas20k.core.factory import PRESETS, ArchSpec
from nas20k.core.graphs import _momentum, _tensor_update
from nas20k.core.recipe import RecipeError, TrainConfig
from nas20k.core.train import (
    EpochStats,
    _loss,
    _optimizer,
    _scheduler,
    evaluate,
    recalibrate_bn,
    train,
)

TINY = PRESETS["small"]


def test_trains_and_reports_every_epoch(mnist):
    seen: list[EpochStats] = []
    result = train(TINY, TrainConfig(epochs=2, batch_size=64, lr=0.1), mnist, seen.append)
    assert result.status == "complete"
    assert [s.epoch for s in seen] == [1, 2] and seen == result.history
    assert seen[-1].val_acc > 0.85  # 2 epochs on 2,000 images: far above chance (0.1)
    assert all(s.seconds > 0 and 0 <= s.train_acc <= 1 for s in seen)
    assert evaluate(result.model, mnist.val) == pytest.approx(seen[-1].val_acc)
    assert not result.model.training


def test_seeded_runs_are_reproducible(mnist):
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05)
    a, b = train(TINY, cfg, mnist), train(TINY, cfg, mnist)
    assert a.history[0].train_loss == b.history[0].train_loss and a.history[0].val_acc == b.history[0].val_acc
    c = train(TINY, TrainConfig(epochs=1, batch_size=128, lr=0.05, seed=1), mnist)
    assert c.history[0].train_loss != a.history[0].train_loss


def test_nan_loss_ends_as_diverged_not_an_exception(mnist):
    result = train(TINY, TrainConfig(epochs=3, batch_size=64, lr=1e30, schedule="none", weight_decay=0), mnist)
    assert result.status == "diverged"
    assert len(result.history) < 3


def test_callback_can_stop_the_run(mnist):
    class Stop(Exception):
        pass

    def stop(stats: EpochStats) -> None:
        raise Stop

    with pytest.raises(Stop):
        train(TINY, TrainConfig(epochs=3, batch_size=256), mnist, stop)


@pytest.mark.parametrize("optimizer, schedule", [("sgd", "step"), ("adam", "onecycle"), ("adamw", "none")])
def test_every_optimizer_and_schedule_learns(mnist, optimizer, schedule):
    lr = 0.05 if optimizer == "sgd" else 0.005
    result = train(TINY, TrainConfig(epochs=2, batch_size=64, optimizer=optimizer, schedule=schedule, lr=lr,
                                     label_smoothing=0.1), mnist)
    assert result.status == "complete" and result.history[-1].val_acc > 0.3, result.history  # chance is 0.1


def test_recalibrated_batchnorm_normalizes_clean_images_with_dropout_off(mnist):
    """After recalibration, in eval mode, each BatchNorm's input over those images has exactly the recorded mean
    and (unbiased) variance: the statistics were taken as test time sees the net. Heavy Dropout before every
    BatchNorm makes recalibrating with Dropout on (as torch's update_bn does) fail this."""
    spec = ArchSpec(blocks=((8, 8), (12, 10)), transitions=(0,), head="direct", dropout=0.5, dropout_after=(0, 1, 2),
                    padding=(1, 0))
    torch.manual_seed(0)
    model = spec.build()
    x = mnist.train.x[:600]
    recalibrate_bn(model, x, batch_size=200)
    assert not model.training
    seen = []
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    hooks = [m.register_forward_hook(lambda m, inp, out: seen.append((m, inp[0]))) for m in norms]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert len(seen) == len(norms) == 4
    for m, inp in seen:
        torch.testing.assert_close(m.running_mean, inp.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(m.running_var, inp.transpose(0, 1).flatten(1).var(1), rtol=2e-3, atol=1e-4)
        assert m.momentum == 0.1  # restored: training goes on with torch's running averages


@pytest.mark.slow
def test_recalibration_changes_the_evaluation_not_the_training(mnist):
    """The same seed with and without it trains identically (same losses, same weights); only BatchNorm's
    buffers and what the val accuracy is measured with differ."""
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05)
    on, off = train(TINY, cfg, mnist), train(TINY, TrainConfig(**{**cfg.to_dict(), "recalibrate_bn": False}), mnist)
    assert [s.train_loss for s in on.history] == [s.train_loss for s in off.history]
    state_on, state_off = on.model.state_dict(), off.model.state_dict()
    for name, value in state_on.items():
        if name.endswith(("running_mean", "running_var")):
            assert not torch.equal(value, state_off[name]), name
        elif not name.endswith("num_batches_tracked"):
            assert torch.equal(value, state_off[name]), name
    assert on.history[-1].val_acc == pytest.approx(evaluate(on.model, mnist.val))


def test_a_recipe_recorded_before_recalibration_reruns_without_it():
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "recalibrate_bn"}
    assert TrainConfig.from_dict(old).recalibrate_bn is False
    assert TrainConfig().recalibrate_bn is True
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


@pytest.mark.parametrize("field, value, message", [
    ("optimizer", "rmsprop", "optimizer"), ("epochs", 0, "epochs"), ("lr", float("inf"), "learning rate"),
    ("lr", float("nan"), "learning rate"), ("lr", 0.0, "learning rate"), ("momentum", 1.0, "momentum"),
    ("weight_decay", -1e-4, "weight decay"), ("weight_decay", float("nan"), "weight decay"),
    ("rotate", 400.0, "rotate"), ("translate", float("inf"), "translate"), ("drop_at", 1.0, "drop_at"),
])
def test_bad_config_is_refused(field, value, message):
    with pytest.raises(RecipeError, match=message):
        TrainConfig(**{field: value}).validate()


# The CUDA-graph step, checked on the CPU: its hand-written update against torch's optimizers, and no host sync.


@pytest.mark.parametrize("optimizer, schedule, nesterov, weight_decay", [
    ("sgd", "onecycle", True, 5e-4), ("sgd", "step", False, 0.0), ("adam", "onecycle", False, 5e-4),
    ("adamw", "step", False, 1e-2), ("adam", "none", False, 0.0),
])
def test_graph_update_follows_torch_optimizer_and_schedule(optimizer, schedule, nesterov, weight_decay):
    cfg = TrainConfig(epochs=2, optimizer=optimizer, schedule=schedule, nesterov=nesterov,
                      lr=0.05 if optimizer == "sgd" else 0.005, weight_decay=weight_decay)
    torch.manual_seed(0)
    ref = TINY.build()
    mine = copy.deepcopy(ref)
    ref_opt, opt = _optimizer(ref, cfg), _optimizer(mine, cfg)
    ref_sched, sched = _scheduler(ref_opt, cfg, 10), _scheduler(opt, cfg, 10)
    opt.step()  # no gradients: no change; as in _graphed_step, keeps the scheduler from warning
    lr, mom = torch.zeros(()), torch.zeros(())
    update, _ = _tensor_update(opt, lr, mom)
    for _ in range(20):
        for p, q in zip(ref.parameters(), mine.parameters(), strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        ref_opt.step()
        ref_sched.step()
        lr.fill_(opt.param_groups[0]["lr"])
        mom.fill_(_momentum(opt.param_groups[0]))
        update()
        sched.step()
    for p, q in zip(ref.parameters(), mine.parameters(), strict=True):
        # Adam's bias corrections in float32, as torch's capturable Adam
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-5)


class _Ops(TorchDispatchMode):
    """Records the aten ops that run; `_local_scalar_dense` is `.item()`: a host sync, which a CUDA graph cannot
    capture."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.seen.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_graphed_step_body_never_syncs(mnist, optimizer):
    cfg = TrainConfig(batch_size=64, optimizer=optimizer, label_smoothing=0.1)
    model = TINY.build()
    opt = _optimizer(model, cfg)
    update, _ = _tensor_update(opt, torch.tensor(0.05), torch.tensor(0.9))
    sums = torch.zeros(()), torch.zeros((), dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    with _Ops() as ops:
        _loss(model, cfg, mnist.train, torch.arange(64), gen, *sums).backward()
        update()
    assert "_local_scalar_dense" not in ops.seen and "convolution_backward" in ops.seen and "_foreach_sub_" in ops.seen
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    with _Ops() as ops:  # why the update is hand-written: torch's SGD makes a tensor learning rate a Python number
        torch.optim.SGD([p], lr=torch.tensor(0.1), momentum=0.9, foreach=True).step()
    assert "_local_scalar_dense" in ops.seen


def test_public_3762_counts_as_published():
    """The smallest public >= 99.4 % net: 3,762 parameters with conv biases, as its authors count them in torch."""
    spec = PRESETS["public-3762"]
    assert spec.num_params() == 3762 == sum(p.numel() for p in spec.build().parameters())


def test_new_recipe_fields_round_trip_and_old_recipes_load_unchanged():
    """`scale` travels through JSON; a recipe recorded before it existed loads with it off (and, older still,
    without BatchNorm recalibration), so it retrains as it was trained."""
    cfg = TrainConfig(scale=0.1)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("scale", "recalibrate_bn")}
    loaded = TrainConfig.from_dict(old)
    assert (loaded.scale, loaded.recalibrate_bn) == (0.0, False)


def test_retired_recipe_fields_are_dropped_when_off_and_refused_when_on():
    """EMA and distillation left the recipe (their benchmarks found them no better): recipes recorded with them
    off, as every committed study's are, load as before; one that used them cannot be replayed, and says so. A
    field nas20k never had is still a typo."""
    recorded = {**TrainConfig(lr=0.02).to_dict(), "ema": 0.0, "distill": 0.0, "teacher": "", "temperature": 4.0}
    assert TrainConfig.from_dict(recorded) == TrainConfig(lr=0.02)
    for on, field in (({"ema": 0.999}, "ema=0.999"), ({"distill": 0.5, "teacher": "t.pt2"}, "distill=0.5")):
        with pytest.raises(RecipeError, match=f"uses {field}.*retired"):
            TrainConfig.from_dict({**recorded, **on})
    with pytest.raises(RecipeError, match="unknown recipe field"):
        TrainConfig.from_dict({**recorded, "emma": 0.0})
