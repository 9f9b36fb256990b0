"""Seed confirmation of a search's winners, raced: the top candidates get more seeds one at a time, and a
candidate stops getting them once it can no longer plausibly overtake the leader.

The rule (`next_run`): the leader is the first of `results.ranked` (the goal's value of the mean val score over
seeds). A challenger stays in the race while its mean plus Z standard errors of the difference to the leader's
mean would still beat the leader: `goal.value(mean_c + Z * sigma * sqrt(1/n_c + 1/n_L)) >= goal.value(mean_L)`,
with sigma one run's val-score sd, pooled over the candidates' seeds (SIGMA_PRIOR until two seeds of one exist).
Why: a challenger further behind than that needs several lucky seeds to overtake, and its remaining runs would
buy nothing; SMAC's intensification drops challengers the same way. The race has a budget, `top * (seeds - 1)`
runs (what its first line plans): once the confirm study holds that many, only the leader gets seeds. Why: when a
leader's mean falls, the next single run moves into the top, and a single run that made the top is lucky on
average, so an unbudgeted race chases one after another (`nas20k-quiet-2`: 12 runs for a plan of 6; on the
recorded races the budget keeps every winner). The leader always runs to `seeds`, so the winner ends with >= 3
seeds (by default), and `best` reads the runs as before.

Runs live in the sibling study `<search>:confirm`, one trial per (search trial, seed), trained by workers on
`Study.optimize`: each worker queues the next run under the planning lock, then takes one queued run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from nas20k.base.mission import Budget, Goal, Z
from nas20k.core.data import check_files, default_data_dir
from nas20k.core.space import Candidate
from nas20k.readers.record import (
    CONFIRM_SUFFIX,
    StudyMeta,
    TrialRecord,
    records,
    search_records,
    write,
)
from nas20k.readers.results import ranked
from nas20k.runner.lost import owner_name, recover_lost_trials
from nas20k.runner.objective import run_candidate
from nas20k.runner.settings import SearchSettings
from nas20k.runner.signals import raise_if_stopped
from nas20k.runner.storage import load_study, open_storage, planning_lock
from nas20k.runner.workers import Worker

SIGMA_PRIOR = 0.0008  # one run's val-score sd before the race has measured one (0.08 points, docs/results.md)
SIGMA_FLOOR = 0.0003  # a pooled sd from a few lucky-close seeds must not end the race on noise


def pooled_sd(candidates: list[TrialRecord]) -> float:
    """One run's val-score sd, pooled over the candidates with >= 2 seeds (SIGMA_PRIOR if none has)."""
    groups = [[s.val_score for s in r.seeds] for r in candidates if r.n_seeds >= 2]
    dof = sum(len(g) - 1 for g in groups)
    if not dof:
        return SIGMA_PRIOR
    return max(SIGMA_FLOOR, math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in groups) / dof))


def race_budget(candidates: list[TrialRecord], seeds: int) -> int:
    """The runs a race may spend before only its leader gets seeds: each candidate's missing seeds, once."""
    return len(candidates) * (seeds - 1)


def next_run(candidates: list[TrialRecord], taken: dict[int, set[int]], seeds: int, goal: Goal,
             budget: Budget, spent: int = 0) -> tuple[int, int] | None:
    """The next (search trial, seed) to train, or None when the race is over. `candidates` are the top ones in
    rank order with their finished seed runs; `taken` the seeds already running or queued per trial; `spent` the
    runs the confirm study holds (finished, running or queued). Seeds go one at a time across the leader and the
    plausible challengers, fewest first (the leader first among equals), until `spent` reaches the budget
    `len(candidates) * (seeds - 1)`, then the leader's alone; a candidate's next seed is its own + 1, + 2, ..."""
    if not candidates:
        return None
    leader = candidates[0]
    sigma = pooled_sd(candidates)

    def plausible(c: TrialRecord) -> bool:
        margin = Z * sigma * math.sqrt(1 / max(c.n_seeds, 1) + 1 / max(leader.n_seeds, 1))
        return (goal.value(c.mean_val() + margin, c.params or 0, budget)
                >= goal.value(leader.mean_val(), leader.params or 0, budget))

    over_budget = spent >= race_budget(candidates, seeds)
    racing = [leader, *(c for c in candidates[1:] if not over_budget and plausible(c))]
    started = {c.number: {s.seed for s in c.seeds} | taken.get(c.number, set()) for c in racing}
    behind = [c for c in racing if len(started[c.number]) < seeds]
    if not behind:
        return None
    # one seed at a time across the race, the leader first among equals
    c = min(behind, key=lambda c: len(started[c.number]))
    own = c.candidate.train.seed
    return c.number, next(own + k for k in range(1, 10 * seeds) if own + k not in started[c.number])


def confirm_candidates(recs: list[TrialRecord], meta: StudyMeta, top: int) -> list[TrialRecord]:
    """The `top` completed trials by the study's goal, their mean over the seeds run so far."""
    return ranked(recs, meta.goal, meta.budget)[:top]


def open_confirm_study(settings: SearchSettings) -> tuple[optuna.Study, optuna.Study]:
    """Check the data and storage, and return the search study and its `:confirm` study (created if new)."""
    settings.validate()
    check_files(Path(settings.data_dir) if settings.data_dir else default_data_dir(), settings.download)
    storage = open_storage(settings.storage_url, settings.heartbeat, settings.storage_patience, "confirm: ",
                           wait_to_open=False, connections=settings.execution.command_connections)
    study = load_study(settings.storage_url, settings.study_name, storage)
    StudyMeta.check(study, data=settings.data_split)  # its runs are ranked with the search's
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)  # a confirm may write its weights to a new folder
    confirm = optuna.create_study(study_name=settings.study_name + CONFIRM_SUFFIX, storage=storage,
                                  direction="maximize", load_if_exists=True, pruner=optuna.pruners.NopPruner())
    confirm.set_metric_names(["val score"])
    with planning_lock(storage, settings.study_name):
        optuna.storages.fail_stale_trials(confirm)  # runs of killed workers, silent for two heartbeats: retried
    return study, confirm


def _race(study: optuna.Study, confirm: optuna.Study, top: int
          ) -> tuple[list[TrialRecord], dict[int, set[int]], int, StudyMeta]:
    """The race as it stands: the candidates, the seeds running or queued per trial, and the runs spent."""
    search = search_records(study)
    steps = {r.number for r in search if r.shrink_of is not None}  # the shrink search races its own steps
    runs = [r for r in records(confirm.get_trials(deepcopy=False)) if r.confirms not in (None, *steps)]
    taken: dict[int, set[int]] = {}
    for r in runs:
        if r.status in ("running", "waiting"):
            taken.setdefault(r.confirms, set()).add(r.seed)
    spent = sum(r.trained or r.status in ("running", "waiting") for r in runs)
    meta = StudyMeta.of(study)
    return confirm_candidates([r for r in search if r.number not in steps], meta, top), taken, spent, meta


def _queue_next(study: optuna.Study, confirm: optuna.Study, top: int, seeds: int) -> tuple[int, int] | None:
    """Under the planning lock: queue the race's next run, or say there is none."""
    candidates, taken, spent, meta = _race(study, confirm, top)
    nxt = next_run(candidates, taken, seeds, meta.goal, meta.budget, spent)
    if nxt is not None:
        trial = next(c for c in candidates if c.number == nxt[0])
        confirm.enqueue_trial({}, user_attrs={"confirms": nxt[0], "seed": nxt[1],
                                              "candidate": trial.candidate.to_dict(), "params": trial.params})
    return nxt


def remaining(study: optuna.Study, confirm: optuna.Study, top: int, seeds: int) -> int:
    """How many more runs the race needs at most (for the progress line): every current candidate to `seeds`,
    within what is left of the race's budget, or the leader's own rest once that is spent."""
    candidates, _, spent, _ = _race(study, confirm, top)
    if not candidates:
        return 0
    every = sum(max(0, seeds - c.n_seeds) for c in candidates)
    return min(every, max(race_budget(candidates, seeds) - spent, seeds - candidates[0].n_seeds))


def seed_objective(w: Worker) -> Callable[[optuna.Trial], float]:
    """The objective of a confirm-study trial: train the queued run's candidate on its seed (the race's runs and
    the shrink search's)."""

    def objective(trial: optuna.Trial) -> float:
        a = trial.user_attrs
        if "seed" not in a:  # no run was queued for this worker after all: a record, not a run
            write(trial, status="rejected", reason="no confirmation run was left to take")
            raise optuna.TrialPruned()
        base = Candidate.from_dict(a["candidate"])
        write(trial, worker=owner_name())
        return run_candidate(trial, Candidate(base.spec, replace(base.train, seed=a["seed"])), w.data, w.runtime,
                             w.store)

    return objective


def confirm_worker(w: Worker, top: int, seeds: int) -> None:
    """Queue the race's next run, train one queued run; until the race is over."""
    s = w.settings
    study = optuna.load_study(study_name=s.study_name, storage=w.storage)
    confirm = optuna.load_study(study_name=s.study_name + CONFIRM_SUFFIX, storage=w.storage,
                                pruner=optuna.pruners.NopPruner())

    objective = seed_objective(w)
    while True:
        raise_if_stopped()
        recover_lost_trials(confirm)  # a run whose worker died is queued again, not counted as running (its seed)
        with planning_lock(w.storage, s.study_name):
            if _queue_next(study, confirm, top, seeds) is None and not _waiting(confirm):
                return
        confirm.optimize(objective, n_trials=1)


def _waiting(confirm: optuna.Study) -> list[FrozenTrial]:
    return confirm.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
