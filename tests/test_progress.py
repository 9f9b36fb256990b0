"""The search's time-left model (progress.py): a range from measured epochs and the pruner's survival, nothing
before an epoch is timed, and the queued unpruned design counted in full."""

import io

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from nas20k.core.factory import PRESETS
from nas20k.core.recipe import TrainConfig
from nas20k.core.space import Candidate
from nas20k.readers.progress import Plan, Reporter, estimate, eta_text, prior_epochs, running_text
from nas20k.readers.record import TrialRecord

CANDIDATE = Candidate(PRESETS["firekind-6174"], TrainConfig())


def trial(number: int, status: str, epochs: int, seconds: float = 10.0, **kw: object) -> TrialRecord:
    history = [{"epoch": e, "seconds": seconds, "val_acc": 0.99 if e % 2 else None} for e in range(1, epochs + 1)]
    return TrialRecord(number, status, candidate=CANDIDATE, history=history, **kw)


def test_prior_epochs_follow_successive_halving():
    """Rungs 1, 3, 9, half kept at each, 20 epochs: 1 + 1/2 * 2 + 1/4 * 6 + 1/8 * 11 epochs per trial."""
    assert prior_epochs(20, (1, 3, 9)) == pytest.approx(1 + 2 / 2 + 6 / 4 + 11 / 8)
    assert prior_epochs(1, (1, 3, 9)) == 1 and prior_epochs(3, (1, 3, 9)) == pytest.approx(1 + 2 / 2)
    assert prior_epochs(20, (1, 3, 9), keep=1 / 3) == pytest.approx(1 + 2 / 3 + 6 / 9 + 11 / 27)


def test_no_estimate_before_an_epoch_is_timed():
    plan = Plan(target=10, workers=2, max_epochs=20)
    assert estimate([TrialRecord(0, "waiting", warm_start="lead")], plan) is None
    assert eta_text([], plan) == "eta after the first epoch"


def test_estimate_counts_queued_unpruned_designs_and_the_rest_at_their_mean_epochs():
    """Three finished sampled trials of 4, 6 and 8 epochs (mean 6), every epoch 10 s, 2 workers; a queued lead
    design (20 epochs, never pruned) and 6 more to sample: (20 + 6 * 6) epochs * 10 s / 2 workers = 280 s at the
    centre; the range widens with the spread of epochs per trial, and confirmations add max_epochs each."""
    recs = [trial(0, "pruned", 4), trial(1, "pruned", 6), trial(2, "pruned", 8),
            TrialRecord(3, "waiting", warm_start="lead", prune_from=None)]
    plan = Plan(target=10, workers=2, max_epochs=20)
    low, high = estimate(recs, plan)
    assert low < 280 < high and high - low < 280
    more_low, more_high = estimate(recs, Plan(target=10, workers=2, max_epochs=20, confirm_runs=2))
    assert more_low == pytest.approx(low + 2 * 20 * 10 / 2) and more_high == pytest.approx(high + 2 * 20 * 10 / 2)


def test_the_live_line_labels_the_epoch_and_shows_the_last_val():
    text = running_text([trial(7, "running", 3)], 20)
    assert text == "#7 ep 4/20 val 99.0%"  # epoch 3 was evaluated; epoch 2 (None) is skipped


def test_confirmation_runs_are_counted_at_all_their_epochs():
    """A confirmation run is never pruned: 4 runs left of 20 epochs at 10 s, 2 workers: 400 s, whatever the prior."""
    recs = [trial(0, "complete", 20)]
    assert estimate(recs, Plan(target=5, workers=2, max_epochs=20, pruned=False)) == pytest.approx((400.0, 400.0))



def test_early_prunings_do_not_pull_the_epochs_per_trial_below_the_prior():
    """The first sampled trials are pruned at epoch 1 (the warm start sets the bar); later ones survive longer, so
    the estimate never counts fewer epochs per trial than the prior (4.875 at 20 epochs): 7 to sample at 10 s, 1
    worker."""
    recs = [trial(n, "pruned", 1) for n in range(3)]
    low, high = estimate(recs, Plan(target=10, workers=1, max_epochs=20))
    assert low <= 7 * prior_epochs(20, (1, 3, 9)) * 10 <= high


def test_a_race_is_replanned_when_a_run_finishes():
    """A race's plan grows when a leader falls and the next candidate moves into the top: the reporter asks for the
    plan again each time a run finishes (its count is what the progress line divides by), and only then."""
    plans = iter([Plan(target=8, workers=2, max_epochs=20, pruned=False)])
    reporter = Reporter(Console(file=io.StringIO()), Plan(target=6, workers=2, max_epochs=20, pruned=False), [],
                        quiet=True, unit="runs", replan=lambda trials: next(plans))
    running = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs={"confirms": 3, "seed": 1})
    reporter([running])
    assert reporter.plan.target == 6  # nothing finished: the plan stands
    done = optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.99, user_attrs={"confirms": 3, "seed": 1})
    reporter([done])
    assert reporter.plan.target == 8
    reporter([done])  # seen already: not asked again (the iterator would raise)
    assert reporter.plan.target == 8
