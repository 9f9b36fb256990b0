"""The Optuna objective: sample a candidate, gate it on parameters, train it, report, keep its weights.

Every trial records `status` (rejected | pruned | diverged | complete) and `reason` in its user attrs:
Optuna's states alone cannot tell an over-budget rejection (PRUNED, never trained) from a pruned one.
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
from nas20k.factory import ArchSpec, SpecError, plan
from nas20k.space import Candidate, suggest
from nas20k.train import EpochStats, evaluate, train

TRAINED = ("complete", "pruned", "diverged")  # statuses that count against --trials
TARGET_ACC = 0.994
SCORE_EPOCHS = 3  # the score is the mean validation accuracy of the last 3 epochs, not a lucky peak


@dataclass(frozen=True)
class Budget:
    max_params: int = 20_000  # strictly fewer
    max_epochs: int = 20

    def validate(self) -> Budget:
        if self.max_params < 1:
            raise ValueError(f"--max-params must be >= 1, got {self.max_params}")
        if not 1 <= self.max_epochs <= 1000:
            raise ValueError(f"--max-epochs must be between 1 and 1000, got {self.max_epochs}")
        return self


def checklist(spec: ArchSpec, epochs: int, test_acc: float | None, budget: Budget) -> list[tuple[str, bool]]:
    """The mission's requirement list, one (line, passed) per requirement."""
    kinds = {layer.kind for layer in plan(spec)}
    params = spec.num_params()
    return [
        (f"parameters < {budget.max_params:,} ({params:,})", params < budget.max_params),
        (f"epochs <= {budget.max_epochs} ({epochs})", epochs <= budget.max_epochs),
        ("BatchNorm used", "bn" in kinds),
        (f"Dropout used (p={spec.dropout:g})", "dropout" in kinds),
        (f"GAP or FC head ({spec.head})", spec.head in ("gap", "fc")),
        (f"test accuracy >= {TARGET_ACC:.1%} ({'-' if test_acc is None else f'{test_acc:.2%}'})", test_acc is not None and test_acc >= TARGET_ACC),
    ]


class Objective:
    def __init__(self, data: Mnist, budget: Budget, artifact_store: optuna.artifacts.FileSystemArtifactStore, seed: int = 0) -> None:
        self.data, self.budget, self.store, self.seed = data, budget, artifact_store, seed

    def __call__(self, trial: optuna.Trial) -> float:
        candidate = suggest(trial, self.budget.max_epochs, self.seed)
        trial.set_user_attr("candidate", candidate.to_dict())
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            params = candidate.spec.num_params()
        except SpecError as e:  # shape errors are caught from the spec, like the budget: zero cost
            self._reject(trial, str(e), violation=self.budget.max_params)
        trial.set_user_attr("params", params)
        trial.set_user_attr("macs", candidate.spec.macs())
        if params >= self.budget.max_params:
            self._reject(trial, f"over budget: {params:,} params >= {self.budget.max_params:,}", violation=params - self.budget.max_params + 1)
        trial.set_user_attr("status", "training")
        return self._train(trial, candidate)

    def _reject(self, trial: optuna.Trial, reason: str, violation: float) -> None:
        trial.set_user_attr("status", "rejected")
        trial.set_user_attr("reason", reason)
        trial.set_constraint("over_budget", violation)  # > 0: infeasible, so TPE learns where the boundary is
        raise optuna.TrialPruned(reason)

    def _train(self, trial: optuna.Trial, candidate: Candidate) -> float:
        history: list[dict] = []
        start = time.perf_counter()

        def finish(status: str, reason: str) -> None:
            trial.set_user_attr("status", status)
            trial.set_user_attr("reason", reason)
            trial.set_user_attr("epochs", len(history))
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 1))

        def on_epoch(stats: EpochStats) -> None:
            history.append({k: round(v, 6) for k, v in asdict(stats).items()})
            trial.set_user_attr("history", history)
            trial.report(stats.val_acc, stats.epoch)
            if trial.should_prune():
                reason = f"pruned at epoch {stats.epoch} (val {stats.val_acc:.2%})"
                finish("pruned", reason)
                raise optuna.TrialPruned(reason)

        result = train(candidate.spec, candidate.train, self.data, on_epoch)
        if result.status == "diverged":
            finish("diverged", f"diverged: loss became NaN/inf in epoch {len(history) + 1}")
            raise optuna.TrialPruned("diverged")
        score = statistics.fmean(h["val_acc"] for h in history[-SCORE_EPOCHS:])
        finish("complete", f"val score {score:.2%} (mean of last {min(SCORE_EPOCHS, len(history))} epochs)")
        trial.set_user_attr("val_acc", history[-1]["val_acc"])
        # Recorded for the report only, after the score is fixed: nothing selects or prunes on it.
        trial.set_user_attr("test_acc", evaluate(result.model, self.data.test))
        self._save_weights(trial, result.model)
        return score

    def _save_weights(self, trial: optuna.Trial, model: torch.nn.Module) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial-{trial.number}.pt"
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, path)
            artifact_id = upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial)
        trial.set_user_attr("weights", artifact_id)
