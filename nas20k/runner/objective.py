"""The Optuna objective: sample a candidate, gate it on parameters, train it, report, keep its weights.

Define-by-run, as in Optuna's examples: `space.suggest` samples, `train` trains, the epoch callback reports
validation accuracy to the pruner. What the trial records goes through `record.write`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path

import optuna
import torch
from optuna.artifacts import upload_artifact

from nas20k.base.mission import Budget, Goal
from nas20k.core.data import Mnist
from nas20k.core.factory import SpecError
from nas20k.core.runtime import Runtime, own_stream
from nas20k.core.space import Candidate, suggest
from nas20k.core.train import EpochStats, TrainResult, train
from nas20k.readers.record import SCORE_EPOCHS, prune_from, queued_design, write
from nas20k.runner.lost import owner_name
from nas20k.runner.signals import raise_if_stopped, signal_name


def run_candidate(trial: optuna.Trial, candidate: Candidate, data: Mnist, runtime: Runtime,
                  store: optuna.artifacts.FileSystemArtifactStore, first_prune: int | None = None,
                  pruner_epochs: Collection[int] = ()) -> float:
    """Train `candidate` as `trial`: evaluate on the epochs the pruner reads (`pruner_epochs`) and the last
    SCORE_EPOCHS (the score), report each to the pruner, which may stop the run from epoch `first_prune` on
    (None: never); record the run, upload the final weights; returns the val score. Shared by search trials and
    confirm runs."""
    history: list[dict] = []
    start = time.perf_counter()

    def finish(status: str, reason: str, **attrs: object) -> None:
        write(trial, status=status, reason=reason, seconds=round(time.perf_counter() - start, 1), **attrs)

    def on_epoch(stats: EpochStats) -> None:
        # `at`: wall clock at the epoch's end, so readers (progress lines, benchmarks/pruners.py) place epochs in time
        history.append({**{k: v if v is None else round(v, 6) for k, v in asdict(stats).items()},
                        "at": round(time.time(), 1)})
        write(trial, history=history)
        raise_if_stopped()  # a worker thread: its process was signalled
        if stats.val_acc is None:
            return
        trial.report(stats.val_acc, stats.epoch)
        # Asked whatever the verdict's use: ASHA records a trial's rung values only when asked.
        if trial.should_prune() and first_prune is not None and stats.epoch >= first_prune:
            reason = f"pruned at epoch {stats.epoch} (val {stats.val_acc:.2%})"
            finish("pruned", reason)
            raise optuna.TrialPruned(reason)

    try:  # from the first write on: a Ctrl-C between "training" and the loop must not leave a plain failure
        write(trial, status="training", history=[])
        epochs = candidate.train.epochs
        evaluated = {*pruner_epochs, *range(epochs - SCORE_EPOCHS + 1, epochs + 1)}
        with own_stream(runtime.device):  # trials that share a process overlap on the GPU
            result = train(candidate.spec, candidate.train, data, on_epoch, runtime=runtime, test_last=SCORE_EPOCHS,
                           eval_epochs=evaluated)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM turned into one by the worker: say so, then let Optuna fail it
        finish("interrupted", f"interrupted by {signal_name(e)} in epoch {len(history) + 1}; the next run retrains it")
        raise
    if result.status == "diverged":
        finish("diverged", f"diverged: loss became NaN/inf in epoch {len(history) + 1}")
        raise optuna.TrialPruned("diverged")
    last = history[-SCORE_EPOCHS:]
    score = statistics.fmean(h["val_acc"] for h in last)
    # Test accuracy is recorded after the score is fixed, for the report only: nothing selects or prunes on it.
    finish("complete", f"val score {score:.2%} (mean of last {len(last)} epochs)", val_score=score,
           test_acc=history[-1]["test_acc"], test_acc_last3=statistics.fmean(h["test_acc"] for h in last),
           weights=_save_weights(trial, result, store))
    return score


def _save_weights(trial: optuna.Trial, result: TrainResult, store: optuna.artifacts.FileSystemArtifactStore) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial-{trial.number}.pt"
        torch.save({k: v.cpu() for k, v in result.model.state_dict().items()}, path)
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)


class Objective:
    """One search trial: sample, gate on the parameter budget at zero cost, train, return the goal's value."""

    def __init__(self, data: Mnist, budget: Budget, store: optuna.artifacts.FileSystemArtifactStore, *,
                 goal: Goal = Goal(), runtime: Runtime = Runtime(), seed: int = 0,
                 pruner_epochs: Collection[int] = ()) -> None:
        self.data, self.budget, self.store, self.goal = data, budget, store, goal
        self.runtime, self.seed, self.pruner_epochs = runtime, seed, pruner_epochs

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            candidate = suggest(trial, self.budget.max_epochs, self.seed)
        except KeyboardInterrupt as e:  # TPE's sampling takes a while in a long study: a signal may land there
            write(trial, status="interrupted",
                  reason=f"interrupted by {signal_name(e)} while sampling, before training; nothing to retrain")
            raise
        write(trial, candidate=candidate.to_dict(), worker=owner_name())
        try:
            params = candidate.spec.num_params()
        except SpecError as e:  # shape errors are caught from the spec, like the budget: zero cost
            self._reject(trial, str(e), violation=self.budget.max_params)
        write(trial, params=params, macs=candidate.spec.macs())
        if params >= self.budget.max_params:
            self._reject(trial, f"over budget: {params:,} params >= {self.budget.max_params:,}",
                         violation=params - self.budget.max_params + 1)
        if params < (floor := self.goal.min_params(self.budget)) and not queued_design(trial):
            self._reject(trial, f"under the floor: {params:,} params < {floor:,}, half of --max-params (the accuracy "
                                "goal samples near the budget)", violation=floor - params)
        trial.set_constraint("over_budget", 0)
        # A warm-start design carries its own first pruning epoch (pruners.warm_prune_from: the lead design never, the
        # rest from the last rung): judged early it would lose to whichever trial starts fast (Adam, no warm-up).
        score = run_candidate(trial, candidate, self.data, self.runtime, self.store, prune_from(trial),
                              self.pruner_epochs)
        return self.goal.value(score, params, self.budget)

    def _reject(self, trial: optuna.Trial, reason: str, violation: float) -> None:
        write(trial, status="rejected", reason=reason)
        # > 0: infeasible (over the budget, or under the accuracy goal's floor), so TPE learns where the band is
        trial.set_constraint("over_budget", violation)
        raise optuna.TrialPruned(reason)

