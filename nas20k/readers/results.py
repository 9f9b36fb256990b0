"""One ranking of a study's trials, and what is read off it: the best, the smallest passing, the candidates to
confirm, the Pareto front, the trials table, the checklist. Selection reads validation only: a candidate's mean
val score over its seeds (its own score until it is confirmed); test accuracy is carried for the record."""

from __future__ import annotations

import datetime
import math

import pandas as pd

from nas20k.base.errors import UserError
from nas20k.base.mission import Budget, Goal, checklist
from nas20k.core.data import DataSplit
from nas20k.core.zoo import Evidence, ZooEntry
from nas20k.readers.record import SCORE_EPOCHS, StudyMeta, TrialRecord

CONFIRMED = 2  # seeds a candidate needs before its mean counts as confirmed (`best --smallest`, the checklist)
COLUMNS = [
    "trial", "status", "params", "epochs", "val_score", "seeds", "mean_val", "sd_val", "test_acc", "test_last3",
    "last_val", "seconds", "macs", "blocks", "transitions", "head", "dropout", "optimizer", "lr", "batch_size",
    "schedule", "warm_start", "move", "reason",
]


class ExportError(UserError):
    """Nothing to pick or export, or nowhere to put it; one readable line."""


def ranked(recs: list[TrialRecord], goal: Goal, budget: Budget) -> list[TrialRecord]:
    """Completed trials, best first by the goal's value of their mean val score over their seeds (for `smallest`:
    passing before failing, fewer parameters first among passing); more seeds first among equals."""
    complete = [r for r in recs if r.status == "complete" and r.val_score is not None]
    return sorted(complete, key=lambda r: (-goal.value(r.mean_val(), r.params or 0, budget), -r.n_seeds, r.number))


def best_record(recs: list[TrialRecord], meta: StudyMeta, study_name: str) -> TrialRecord:
    """The completed trial with the highest mean val score (never test accuracy)."""
    best = ranked(recs, Goal(), meta.budget)
    if not best:
        raise ExportError(f"study {study_name!r} has no completed trial yet; "
                          "run `nas20k search` (or let it finish a trial) first")
    return best[0]


def smallest_record(recs: list[TrialRecord], meta: StudyMeta, study_name: str, target: float) -> TrialRecord:
    """The fewest-parameter trial whose confirmed (>= CONFIRMED seeds) mean val score reaches `target`."""
    passing = [r for r in ranked(recs, Goal("smallest", target), meta.budget)
               if r.n_seeds >= CONFIRMED and r.mean_val() >= target]
    if not passing:
        raise ExportError(f"study {study_name!r} has no candidate with a confirmed mean val score >= {target:.2%} "
                          f"(>= {CONFIRMED} seeds); run `nas20k confirm` on it, or search longer")
    return passing[0]


def record_checklist(r: TrialRecord, meta: StudyMeta) -> list[tuple[str, bool | None]]:
    """The mission's list; accuracy is the mean over seeds of each run's last-3-epoch test accuracy where known."""
    n = sum(s.test_acc_last3 is not None for s in r.seeds)
    label = f"test accuracy, mean of last {SCORE_EPOCHS} epochs over {n} seed{'s' * (n != 1)}" if n else "test accuracy"
    acc = r.mean_test_last3() if n else r.test_acc
    return checklist(r.candidate.spec.facts(r.epochs), acc, meta.budget, label, seeds=n)


def pareto_front(recs: list[TrialRecord]) -> list[TrialRecord]:
    """The completed trials no other completed trial beats on both counts (fewer-or-equal parameters and
    higher-or-equal mean val score, one strictly), by parameter count: the smallest net for each accuracy level."""
    front: list[TrialRecord] = []
    best = -math.inf
    # Fewest parameters first, best score first among equals: a trial is dominated exactly when an
    # earlier one scored higher, or scored the same with fewer parameters.
    for r in sorted((r for r in ranked(recs, Goal(), Budget()) if r.params is not None),
                    key=lambda r: (r.params, -r.mean_val())):
        ties_last = bool(front) and (front[-1].params, front[-1].mean_val()) == (r.params, r.mean_val())
        if r.mean_val() > best or ties_last:
            front.append(r)
            best = r.mean_val()
    return front


def _arch(widths: tuple) -> str:
    return " | ".join("-".join(map(str, b)) for b in widths)


def trials_frame(recs: list[TrialRecord]) -> pd.DataFrame:
    """One row per trial; test accuracy only for completed runs (recorded, never used to choose)."""
    rows = []
    for r in recs:
        spec, cfg = (r.candidate.spec, r.candidate.train) if r.candidate else (None, None)
        rows.append({
            "trial": r.number, "status": r.status, "params": r.params, "epochs": r.epochs, "val_score": r.val_score,
            "seeds": r.n_seeds or None, "mean_val": r.mean_val(), "sd_val": r.sd_val(), "test_acc": r.test_acc,
            "test_last3": r.mean_test_last3(), "last_val": r.last_val, "seconds": r.seconds, "macs": r.macs,
            "blocks": _arch(spec.blocks) if spec else "",
            "transitions": "-".join(map(str, spec.transitions)) if spec else "",
            "head": spec.head if spec else None, "dropout": spec.dropout if spec else None,
            "optimizer": cfg.optimizer if cfg else None, "lr": cfg.lr if cfg else None,
            "batch_size": cfg.batch_size if cfg else None, "schedule": cfg.schedule if cfg else None,
            "warm_start": r.warm_start or "", "move": r.origin if r.move else "",
            "reason": r.reason,
        })
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"params": "Int64", "epochs": "Int64", "seeds": "Int64", "macs": "Int64",
                         "batch_size": "Int64"})


def zoo_entry(r: TrialRecord, meta: StudyMeta, study_name: str, where: str, name: str,
              follows: tuple[str, ...] = ()) -> ZooEntry:
    """A confirmed trial as a zoo entry, its evidence read off the study (`where`: the storage, redacted)."""
    if r.candidate is None or r.n_seeds < CONFIRMED:
        raise ExportError(f"trial #{r.number} of {study_name!r} is not confirmed ({r.n_seeds} seed); "
                          "run `nas20k confirm` first")
    split = meta.data or DataSplit()
    run = meta.runtime[0] if meta.runtime else {}
    evidence = Evidence(study=where, study_name=study_name, trial=r.number,
                        budget=(meta.budget.max_params, meta.budget.max_epochs), goal=meta.goal.kind, epochs=r.epochs,
                        seeds=r.n_seeds, val_mean=r.mean_val(), val_sd=r.sd_val() or 0.0,
                        test_mean=r.mean_test_last3(), hardware=run.get("device_name"), torch=run.get("torch"),
                        date=datetime.date.today().isoformat(), split_seed=split.split_seed, val_size=split.val_size)
    return ZooEntry(name=name, spec=r.candidate.spec, recipe=r.candidate.train, follows=follows, evidence=evidence)
