"""Ctrl-C (SIGINT) and `kill` (SIGTERM) during training: a non-zero exit, one line, no RUNNING trial, the trial
recorded as interrupted with the signal's name, and the next run retrains it before any new sample."""

import signal
import time
import weakref

import pytest
from conftest import (
    DATA_DIR,
    LONGER,
    cli,
    load,
    restoring_signals,
    start,
    status,
    training_now,
    wait_for,
)
from optuna.trial import TrialState

from nas20k.base.mission import Budget
from nas20k.runner.settings import SearchSettings
from nas20k.runner.signals import catch_signals
from nas20k.runner.study import prepare

pytestmark = pytest.mark.slow  # real processes and searches


def longer(flag: str) -> int:
    return int(LONGER[LONGER.index(flag) + 1])


def resume(cwd, **kw):  # noqa: ANN001, ANN201
    """What the next `search` queues before training (its `prepare` step), without training: the flags of the
    LONGER search it resumes (a study refuses another budget or data split)."""
    return prepare(SearchSettings(budget=Budget(max_epochs=longer("--max-epochs")), val_size=longer("--val-size"),
                                  limit=longer("--limit"), storage=f"sqlite:///{cwd}/studies/nas20k.db",
                                  data_dir=str(DATA_DIR), download=False, **kw))


def interrupt(args: list[str], cwd, sig: signal.Signals, running: int = 1) -> str:  # noqa: ANN001
    """Start `nas20k *args`, send `sig` once `running` trials are training, return its stderr."""
    proc = start(args, cwd)
    db = cwd / "studies" / "nas20k.db"
    wait_for(lambda: len(training_now(db)) >= running, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    said, command = err.strip().splitlines()
    assert said == "interrupted: study 'nas20k' is saved; its interrupted trial trains first next time."
    assert command == f"continue with: nas20k {' '.join(args)}"
    return err


def check_interrupted(cwd, sig: signal.Signals, n: int) -> list:  # noqa: ANN001
    """No trial is left RUNNING; the `n` trials that were training are FAIL with status interrupted, naming `sig`."""
    study = load(cwd)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    hit = [t for t in study.trials if status(t) == "interrupted"]
    assert len(hit) == n, [(t.number, t.state.name, t.user_attrs.get("status"), t.user_attrs.get("reason"))
                           for t in study.trials]
    for t in hit:
        assert t.state == TrialState.FAIL
        assert f"interrupted by {sig.name} in epoch" in t.user_attrs["reason"]
        assert "retrains it" in t.user_attrs["reason"]
    return hit


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_training_is_recorded_and_the_trial_retrained_first(tmp_path, sig):
    args = ["search", "--trials", "1", *LONGER, "--no-warm-start", "--confirm-top", "0", "--jobs", "1", "-q"]
    interrupt(args, tmp_path, sig)
    (hit,) = check_interrupted(tmp_path, sig, 1)
    if sig == signal.SIGTERM:  # the queue the next run starts from (SIGINT's case below runs it)
        study, queued = resume(tmp_path, trials=1, warm_start=False)
        assert queued == {"warm_start": [], "retries": [hit.number]}
        (retry,) = study.get_trials(states=(TrialState.WAITING,))
        assert retry.user_attrs["retry_of"] == hit.number and retry.system_attrs["fixed_params"] == hit.params
        return
    r = cli(*args, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert f"first: retraining interrupted trial(s) #{hit.number}" in r.stdout
    study = load(tmp_path)
    (retry,) = study.trials[hit.number + 1 :]  # the next trial, and the only one this run trained
    assert retry.user_attrs["retry_of"] == hit.number and retry.params == hit.params and status(retry) == "complete"
    assert cli("best", cwd=tmp_path).exit_code == 0


def test_resume_retrains_the_interrupted_trial_before_the_queued_warm_start(tmp_path):
    """Ctrl-C while the first warm-start design trains, the rest of the warm start still queued: the next run
    trains the interrupted one first (the queue behind it moves back), as its first line says."""
    args = ["search", "--trials", "2", *LONGER, "--max-params", "8000", "--confirm-top", "0", "--jobs", "1", "-q"]
    interrupt(args, tmp_path, signal.SIGINT)
    (hit,) = check_interrupted(tmp_path, signal.SIGINT, 1)
    assert hit.user_attrs["warm_start"] == "nas20k-7458"
    r = cli(*args, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert f"first: retraining interrupted trial(s) #{hit.number}" in r.stdout
    trained = sorted((t for t in load(tmp_path).trials if status(t) in ("complete", "pruned")),
                     key=lambda t: t.datetime_start)
    assert trained[0].user_attrs["retry_of"] == hit.number and trained[0].user_attrs["warm_start"] == "nas20k-7458"
    assert trained[1].user_attrs["warm_start"] == "nas20k-16424-scaled"  # then the queue: the lead's follower


def test_sigterm_to_the_parent_of_two_workers(tmp_path):
    """`kill PID` of a search running two worker processes: both trials are recorded as interrupted by SIGTERM."""
    args = ["search", "--trials", "2", *LONGER, "--confirm-top", "0", "--jobs", "2", "-q"]
    interrupt(args, tmp_path, signal.SIGTERM, running=2)
    hit = check_interrupted(tmp_path, signal.SIGTERM, 2)
    assert len({t.user_attrs["worker"] for t in hit}) == 2  # one trial per worker process
    study, queued = resume(tmp_path, trials=2)
    assert sorted(queued["retries"]) == sorted(t.number for t in hit) and queued["warm_start"] == []
    retries = [t for t in study.get_trials(states=(TrialState.WAITING,)) if "retry_of" in t.user_attrs]
    by_number = {t.number: t for t in hit}
    assert sorted(t.user_attrs["retry_of"] for t in retries) == sorted(by_number)
    for t in retries:
        original = by_number[t.user_attrs["retry_of"]]
        assert t.system_attrs["fixed_params"] == original.params
        assert t.user_attrs.get("warm_start") == original.user_attrs.get("warm_start")  # a retried preset stays one


def test_a_signal_inside_a_garbage_collection_callback_still_stops_the_run():
    """Python drops an exception raised in a weakref callback ("Exception ignored in ..."): a SIGTERM that lands
    there (seen in CI, inside SQLAlchemy's `_collection_gced`) must still interrupt the search."""
    class Thing:
        pass

    def callback(_ref: weakref.ref) -> None:
        signal.raise_signal(signal.SIGTERM)  # the handler runs here, inside the callback
        sum(range(1000))

    with restoring_signals():
        catch_signals()
        thing = Thing()
        ref = weakref.ref(thing, callback)  # noqa: F841 - kept alive so its callback runs
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            del thing
            time.sleep(5)  # the search's work going on: the re-sent signal interrupts it
