"""The search: create or resume a study, queue its warm start and interrupted trials, and run the workers that
optimize it (`Study.optimize`, TPE + pruning).

`--trials N` is the study's total of *trained* candidates (complete, pruned or diverged): rejected
candidates do not count, and re-running the same command continues until N is reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas20k.base.errors import UserError
from nas20k.base.optuna_private import enqueue_again, queued_params, requeue_behind
from nas20k.core.data import check_files, default_data_dir
from nas20k.core.pruners import make_pruner, pruner_epochs, warm_prune_from
from nas20k.core.space import Candidate, params_of, warm_start
from nas20k.core.zoo import entries
from nas20k.readers.record import CARRIED, StudyMeta, records, write
from nas20k.runner.local import enqueue_move
from nas20k.runner.lost import OWNER, lose_trial, recover_lost_trials, sibling
from nas20k.runner.objective import Objective
from nas20k.runner.settings import SearchSettings
from nas20k.runner.signals import raise_if_stopped
from nas20k.runner.storage import open_storage, planning_lock
from nas20k.runner.workers import BudgetError, Worker

MAX_REJECTED_IN_A_ROW = 200  # then the budget is too small for the space: stop instead of sampling forever
def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    # group=True: the space is conditional (2 or 3 blocks); constant_liar: parallel workers avoid duplicates.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def trained_count(trials: list[FrozenTrial]) -> int:
    """The trials that count against --trials: trained ones, but not the shrink search's steps (it runs after)."""
    return sum(r.trained and r.shrink_of is None for r in records(trials))


def give_back(study: optuna.Study, trial: optuna.Trial, reason: str) -> NoReturn:
    """Record a popped trial as `surplus` (not trained, not counted) and end it; a queued design in it is queued
    again, for a resumed search."""
    if queued_params(mine := study.get_trials(deepcopy=False)[trial.number]):
        enqueue_again(study, mine)
    write(trial, status="surplus", reason=reason)
    raise optuna.TrialPruned("surplus")


def chosen_starts(settings: SearchSettings) -> list[tuple[str, Candidate]]:
    """What the warm start queues, in order: the designs that fit the budget, the rest scaled to it; of them the
    first, the lead, and the zoo's followers for the goal (`ZooEntry.follows`), or, given `--start`, the named ones
    (e.g. one zoo design alone, re-confirmed on another `--split-seed`)."""
    zoo = entries()
    fits = warm_start(settings.budget.max_epochs, settings.seed, settings.budget.max_params, zoo)
    if settings.starts:
        by_base = {name.removesuffix("-scaled"): name for name in fits}
        if missing := [n for n in settings.starts if n.removesuffix("-scaled") not in by_base]:
            raise UserError(f"--start: no zoo design {', '.join(map(repr, missing))} fits "
                            f"{settings.budget.max_params:,} params, even scaled (see `nas20k zoo`)")
        named = [by_base[n.removesuffix("-scaled")] for n in settings.starts]
        if len(set(named)) != len(named):  # the same design by its own name and its scaled one counts too
            raise UserError(f"--start names a design twice: {', '.join(settings.starts)}")
        return [(name, fits[name]) for name in named]
    starts = list(fits.items())
    followers = {e.name for e in zoo if settings.goal.kind in e.follows}
    return starts[:1] + [(name, c) for name, c in starts[1:] if name.removesuffix("-scaled") in followers]


def _enqueue_warm_start(study: optuna.Study, settings: SearchSettings, meta: StudyMeta,
                        starts: list[tuple[str, Candidate]] | None) -> list[str]:
    """Seed a new study with `chosen_starts` (once per study, whoever starts first; `starts`: already chosen for
    `--start`). The first trains to the end unpruned; the others may be pruned from `pruners.warm_prune_from`."""
    if not settings.warm_start or meta.warm_started is not None or study.get_trials(deepcopy=False):
        if starts is not None and [name for name, _ in starts] != meta.warm_started:
            raise UserError(f"--start: study {settings.study_name!r} already exists, started from "
                            f"{', '.join(meta.warm_started or []) or 'nothing'}; give a new --study-name")
        meta.warm_started = meta.warm_started or []
        return []
    starts = starts or chosen_starts(settings)
    for i, (name, candidate) in enumerate(starts):
        prune_from = None if i == 0 else warm_prune_from(settings.budget.max_epochs)
        study.enqueue_trial(params_of(candidate), user_attrs={"warm_start": name, "prune_from": prune_from})
    meta.warm_started = [name for name, _ in starts]
    return meta.warm_started


def _enqueue_retries(study: optuna.Study) -> list[int]:
    """Queue every trial interrupted in training again with the same parameters (retrained from its first epoch),
    ahead of anything queued before (`requeue_behind`); one stopped while sampling has no candidate yet, and
    nothing to retrain."""
    trials = study.get_trials(deepcopy=False)
    recs = records(trials)
    retried = {r.retry_of for r in recs if r.retry_of is not None}
    todo = [r for r in recs if r.status == "interrupted" and r.candidate is not None and r.number not in retried]
    if not todo:
        return []
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    for r in todo:
        kept = {k: v for k, v in trials[r.number].user_attrs.items() if k in CARRIED}
        study.enqueue_trial(trials[r.number].params, user_attrs={"retry_of": r.number, **kept})
    requeue_behind(study, waiting)
    return [r.number for r in todo]


def prepare(settings: SearchSettings) -> tuple[optuna.Study, dict]:
    """Check everything a search needs before any trial starts (settings, data files, storage); create or load
    the study; enqueue the warm start (new study) and interrupted trials (resume). Returns the study and what
    was queued."""
    settings.validate()
    # --start's designs: an unknown name, or one the space cannot express here, is refused before any study exists
    starts = chosen_starts(settings) if settings.starts else None
    check_files(Path(settings.data_dir) if settings.data_dir else default_data_dir(), settings.download)
    storage = open_storage(settings.storage_url, settings.heartbeat, settings.storage_patience, "search: ",
                           wait_to_open=False, connections=settings.execution.command_connections)
    study = optuna.create_study(study_name=settings.study_name, storage=storage, direction="maximize",
                                load_if_exists=True)
    split = settings.data_split
    fixed = {"budget": settings.budget, "goal": settings.goal, "data": split}
    StudyMeta.check(study, **fixed)  # before anything is written (the lock too): a refused start leaves the file as is
    with planning_lock(storage, settings.study_name):  # racing workers check, read and write the attributes in turn
        # Again under the lock: a worker started at the same moment with another split sees the first one's and stops.
        StudyMeta.check(study, **fixed)
        meta = StudyMeta.of(study)
        meta.budget, meta.goal, meta.data = settings.budget, settings.goal, split
        meta.trials_target = max(settings.trials, meta.trials_target)
        if (run := settings.execution.describe()) not in meta.runtime:
            meta.runtime = [*meta.runtime, run]
        queued = {"warm_start": _enqueue_warm_start(study, settings, meta, starts), "retries": _enqueue_retries(study)}
        meta.save(study)
    study.set_metric_names(["val score" if settings.goal.kind == "accuracy"
                            else f"val score, size bonus above {settings.goal.target:.2%}"])
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    return study, queued


def search_worker(w: Worker) -> None:
    """Optimize the shared study until it holds --trials trained candidates (`Study.optimize`: it pops queued
    trials first, beats the heartbeat and tells the result). A trial whose worker is gone is never counted as
    running: it is failed and queued again (`recover_lost_trials`), here at the start, after each trial and while
    waiting for the last running ones (`_until_trained`)."""
    s = w.settings
    # Seeded by the study's progress too, so a resumed search does not replay the first run's samples.
    existing = len(optuna.load_study(study_name=s.study_name, storage=w.storage).get_trials(deepcopy=False))
    study = optuna.load_study(study_name=s.study_name, storage=w.storage,
                              sampler=make_sampler(s.seed + 1000 * w.index + existing),
                              pruner=make_pruner(s.pruner, s.budget.max_epochs))
    objective = Objective(w.data, s.budget, w.store, goal=s.goal, runtime=w.runtime, seed=s.seed,
                          pruner_epochs=pruner_epochs(s.pruner, s.budget.max_epochs))

    def within_trials(trial: optuna.Trial) -> float:
        """`objective`, unless the trials trained and those started before this one already make --trials: workers
        on other machines start their last trials at once, and the lower number wins (the count stays exact)."""
        trials = study.get_trials(deepcopy=False)
        ahead = sum(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)
        if trained_count(trials) + ahead < s.trials:
            return objective(trial)
        study.stop()
        give_back(study, trial, f"not trained: the study's other trials make --trials {s.trials}")

    def stop_when_done(study: optuna.Study, _: FrozenTrial) -> None:
        raise_if_stopped()
        recover_lost_trials(study)
        trials = study.get_trials(deepcopy=False)
        # Other workers' running trials will count too: starting one more would leave this worker's core idle
        # while it trains past --trials (seen: a 51st trial trained for 12 minutes on one of two cores).
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if trained_count(trials) + running >= s.trials:
            study.stop()
        elif s.local_search:
            enqueue_move(study, w.storage, s.budget.max_params, s.seed)
        elif len(trials) >= MAX_REJECTED_IN_A_ROW and all(r.status == "rejected"
                                                          for r in records(trials[-MAX_REJECTED_IN_A_ROW:])):
            raise BudgetError(f"the last {MAX_REJECTED_IN_A_ROW} candidates were all rejected: "
                              f"--max-params {s.budget.max_params:,} leaves no room in the search space")

    _until_trained(study, w, lambda: study.optimize(within_trials, callbacks=[stop_when_done]))


WAIT_POLL = 2.0  # seconds between looks at the trials this worker waits for


def _until_trained(study: optuna.Study, w: Worker, optimize: Callable[[], None]) -> None:
    """Run `optimize` until the study holds --trials trained candidates. When the trials still running would
    reach it, wait for them rather than start more: they end trained, or their worker dies (this host: found at once;
    another: once its heartbeat is stale) and they are queued again, for this worker to train."""
    s, said = w.settings, False
    unclaimed: dict[int, float] = {}  # RUNNING trials without an owner, since when (a trial created in an outage)
    while True:
        raise_if_stopped()
        recover_lost_trials(study)
        trials = study.get_trials(deepcopy=False)
        trained = trained_count(trials)
        if trained >= s.trials:
            return
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if trained + len(running) < s.trials:
            optimize()
            continue
        now = time.monotonic()
        unclaimed = {t.number: unclaimed.get(t.number, now) for t in running if OWNER not in t.user_attrs}
        for t in running:
            if now - unclaimed.get(t.number, now) > 2 * s.heartbeat:  # its creator lost it: no owner, no heartbeat
                lose_trial(study, t, "never claimed by a worker (created while the storage was failing)")
        others = [str(t.user_attrs.get(OWNER, "?")) for t in running if not sibling(t.user_attrs.get(OWNER))]
        if others and not said and w.index == 0:
            print(f"waiting for {len(others)} trial(s) of other runs ({', '.join(sorted(others)[:4])}) to finish; "
                  "one whose worker is gone is retrained here (another host's once its heartbeat is "
                  f"{2 * s.heartbeat} s old)", flush=True)
            said = True
        time.sleep(WAIT_POLL)


PROBE_BATCHES = 12


def probe_seconds_per_epoch(settings: SearchSettings, study: optuna.Study) -> float | None:
    """Seconds one worker takes per epoch of the first queued design, timed on PROBE_BATCHES batches (a second or
    two), so the first progress line can say when the first score arrives. None when nothing is queued."""
    import torch

    from nas20k.core.data import load_mnist
    from nas20k.core.train import train

    recs = records(study.get_trials(deepcopy=False))
    first = next((r for r in recs if r.status == "waiting"), None)
    if first is not None and first.retry_of is not None:
        candidate = recs[first.retry_of].candidate
    elif first is not None and first.warm_start:
        starts = warm_start(settings.budget.max_epochs, settings.seed, settings.budget.max_params)
        candidate = starts.get(first.warm_start)
    else:
        return None
    cfg = replace(candidate.train, epochs=1, recalibrate_bn=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.execution.threads or threads)
    try:
        runtime = settings.execution.runtime
        data = load_mnist(settings.data_dir, val_size=100, limit=cfg.batch_size * PROBE_BATCHES,
                          device=runtime.device, download=False)
        seconds = train(candidate.spec, cfg, data, runtime=runtime, eval_epochs=()).history[0].seconds
    finally:
        torch.set_num_threads(threads)
    n_train = min(settings.limit or 60_000, 60_000 - settings.val_size)
    return seconds * n_train / (cfg.batch_size * PROBE_BATCHES)
