"""The Optuna objective: sample a candidate, gate it on parameters, train it, report, keep its weights.

Define-by-run, as in Optuna's examples: `space.suggest` samples, `train` trains, the epoch callback reports
validation accuracy to the pruner. What the trial records goes through `record.write`.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
import torch
from optuna.artifacts import upload_artifact

from nas20k.data import Mnist
from nas20k.errors import UserError
from nas20k.factory import ArchSpec, SpecError, plan
from nas20k.record import SCORE_EPOCHS, warm_start_of, write
from nas20k.runtime import Runtime
from nas20k.space import Candidate, suggest
from nas20k.train import MAX_EPOCHS, EpochStats, TrainResult, train

TARGET_ACC = 0.994
GOALS = ("accuracy", "smallest")


@dataclass(frozen=True)
class Budget:
    max_params: int = 20_000  # strictly fewer
    max_epochs: int = 20

    def validate(self) -> Budget:
        if self.max_params < 1:
            raise UserError(f"--max-params must be >= 1, got {self.max_params}")
        if not 1 <= self.max_epochs <= MAX_EPOCHS:
            raise UserError(f"--max-epochs must be between 1 and {MAX_EPOCHS}, got {self.max_epochs}")
        return self


@dataclass(frozen=True)
class Goal:
    """`accuracy`: the highest val score. `smallest`: the fewest parameters whose val score reaches `target`."""

    kind: str = "accuracy"
    target: float = TARGET_ACC  # val score a `smallest` search must reach

    def validate(self) -> Goal:
        if self.kind not in GOALS:
            raise UserError(f"--goal must be one of {', '.join(GOALS)}, got {self.kind!r}")
        if not 0 < self.target < 1:
            raise UserError(f"--target must be a val accuracy between 0 and 1 (e.g. 0.994), got {self.target}")
        return self

    def value(self, val_score: float, params: int, budget: Budget) -> float:
        """What the study maximizes. For `smallest`: any passing candidate beats any failing one, and among
        passing ones fewer parameters win (target + up to 1 point); failing ones rank by their val score.
        Pruning still compares validation accuracy per epoch, which is what the trials report."""
        if self.kind == "accuracy" or val_score < self.target:
            return val_score
        return self.target + 0.01 * (1 - params / budget.max_params)


def checklist(spec: ArchSpec, epochs: int, test_acc: float | None, budget: Budget, test_label: str = "test accuracy") -> list[tuple[str, bool]]:
    """The mission's requirement list, one (line, passed) per requirement."""
    kinds = {layer.kind for layer in plan(spec)}
    params = spec.num_params()
    return [
        (f"parameters < {budget.max_params:,} ({params:,})", params < budget.max_params),
        (f"epochs <= {budget.max_epochs} ({epochs})", epochs <= budget.max_epochs),
        ("BatchNorm used", "bn" in kinds),
        (f"Dropout used (p={spec.dropout:.3g})", "dropout" in kinds),
        (f"GAP or FC head ({spec.head})", True),  # every head the factory builds ends in a global average pool or a linear layer
        (f"{test_label} >= {TARGET_ACC:.1%} ({'-' if test_acc is None else f'{test_acc:.2%}'})", test_acc is not None and test_acc >= TARGET_ACC),
    ]


def run_candidate(trial: optuna.Trial, candidate: Candidate, data: Mnist, runtime: Runtime,
                  store: optuna.artifacts.FileSystemArtifactStore, prunable: bool = True) -> float:
    """Train `candidate` as `trial`: report val accuracy each epoch (the pruner may stop it unless not
    `prunable`), record the run, upload the final weights; returns the val score. Shared by search trials and
    confirm runs."""
    history: list[dict] = []
    start = time.perf_counter()

    def finish(status: str, reason: str, **attrs: object) -> None:
        write(trial, status=status, reason=reason, seconds=round(time.perf_counter() - start, 1), **attrs)

    def on_epoch(stats: EpochStats) -> None:
        # `at` (wall clock when the epoch ended) lets readers place epochs in time: progress lines, benchmarks/pruners.py
        history.append({**{k: v if v is None else round(v, 6) for k, v in asdict(stats).items()}, "at": round(time.time(), 1)})
        write(trial, history=history)
        trial.report(stats.val_acc, stats.epoch)
        if trial.should_prune() and prunable:  # asked either way: ASHA records a trial's rung values only when asked
            reason = f"pruned at epoch {stats.epoch} (val {stats.val_acc:.2%})"
            finish("pruned", reason)
            raise optuna.TrialPruned(reason)

    try:  # from the first write on: a Ctrl-C between "training" and the loop must not leave a plain failure
        write(trial, status="training", history=[])
        result = train(candidate.spec, candidate.train, data, on_epoch, runtime=runtime, test_last=SCORE_EPOCHS)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM turned into one by the worker: say so, then let Optuna fail it
        finish("interrupted", f"interrupted by {_signal_name(e)} in epoch {len(history) + 1}; the next run retrains it")
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


def _signal_name(e: KeyboardInterrupt) -> str:
    return e.args[0] if e.args else "SIGINT"


def _save_weights(trial: optuna.Trial, result: TrainResult, store: optuna.artifacts.FileSystemArtifactStore) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial-{trial.number}.pt"
        torch.save({k: v.cpu() for k, v in result.model.state_dict().items()}, path)
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)


class Objective:
    """One search trial: sample, gate on the parameter budget at zero cost, train, return the goal's value."""

    def __init__(self, data: Mnist, budget: Budget, store: optuna.artifacts.FileSystemArtifactStore, *,
                 goal: Goal = Goal(), runtime: Runtime = Runtime(), seed: int = 0) -> None:
        self.data, self.budget, self.store, self.goal, self.runtime, self.seed = data, budget, store, goal, runtime, seed

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            candidate = suggest(trial, self.budget.max_epochs, self.seed)
        except KeyboardInterrupt as e:  # TPE's sampling takes a while in a long study: a signal may land there
            write(trial, status="interrupted", reason=f"interrupted by {_signal_name(e)} while sampling, before training; nothing to retrain")
            raise
        write(trial, candidate=candidate.to_dict(), worker=f"{socket.gethostname()}:{os.getpid()}")
        try:
            params = candidate.spec.num_params()
        except SpecError as e:  # shape errors are caught from the spec, like the budget: zero cost
            self._reject(trial, str(e), violation=self.budget.max_params)
        write(trial, params=params, macs=candidate.spec.macs())
        if params >= self.budget.max_params:
            self._reject(trial, f"over budget: {params:,} params >= {self.budget.max_params:,}", violation=params - self.budget.max_params + 1)
        trial.set_constraint("over_budget", 0)
        # A warm-start design is known to be strong: it trains to the end, and its reports calibrate the pruner's
        # rungs. Pruned, it would be judged at epoch 1 against whichever trial reported first (a fast Adam start).
        score = run_candidate(trial, candidate, self.data, self.runtime, self.store, prunable=warm_start_of(trial) is None)
        return self.goal.value(score, params, self.budget)

    def _reject(self, trial: optuna.Trial, reason: str, violation: float) -> None:
        write(trial, status="rejected", reason=reason)
        trial.set_constraint("over_budget", violation)  # > 0: infeasible, so TPE learns where the boundary is
        raise optuna.TrialPruned(reason)

