import pytest

from nas20k.factory import PRESETS
from nas20k.train import EpochStats, TrainConfig, evaluate, train

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
    result = train(TINY, TrainConfig(epochs=2, batch_size=64, optimizer=optimizer, schedule=schedule, lr=lr, label_smoothing=0.1), mnist)
    assert result.status == "complete" and result.history[-1].val_acc > 0.3, result.history  # chance is 0.1


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop").validate()
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0).validate()
