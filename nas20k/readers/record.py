"""What a study and its trials record, in one place: the runner writes through `write` and `StudyMeta.save`, and
every reader (best, trials, report, export, progress lines) gets a typed `TrialRecord` / `StudyMeta` back.

Optuna's states alone cannot tell an over-budget rejection (PRUNED, never trained) from a pruned trial, nor
an interrupted one from a crash, so each trial also carries `status` and `reason` in its user attrs.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, fields

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas20k.base.errors import UserError
from nas20k.base.mission import Budget, Goal
from nas20k.base.optuna_private import storage_of
from nas20k.core.data import DataSplit
from nas20k.core.space import Candidate

STATUSES = ("complete", "pruned", "rejected", "diverged", "interrupted", "failed", "running", "waiting", "requeued",
            "surplus")
# Trials that never trained nor will: "surplus", one started by a worker at the moment another's made the study's
# --trials (a queued design in it is queued again).
NOT_RUN = ("running", "waiting", "requeued", "surplus")
TRAINED = ("complete", "pruned", "diverged")  # the statuses that count against --trials
SCORE_EPOCHS = 3  # a run's score is the mean validation accuracy of its last 3 epochs, not a lucky peak
_STATE_STATUS = {TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
CONFIRM_SUFFIX = ":confirm"  # the study holding a search's seed-confirmation runs, in the same storage


@dataclass
class StudyMeta:
    """The study's own attributes: the budget, goal and data split (`data`: --val-size and --limit) it was searched
    under (fixed at creation), what the warm start queued (None: not decided yet), the --trials it was asked for,
    and how each run executed (`runtime`: one entry per distinct device/precision/workers/threads/torch
    combination)."""

    budget: Budget = field(default_factory=Budget)
    goal: Goal = field(default_factory=Goal)
    data: DataSplit | None = None  # None: a study from before it was recorded
    warm_started: list[str] | None = None
    trials_target: int = 0
    runtime: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, study: optuna.Study) -> StudyMeta:
        return cls._from(study.user_attrs)

    @classmethod
    def _from(cls, a: dict) -> StudyMeta:
        return cls(Budget(**a.get("budget", {})), Goal(**a.get("goal", {})),
                   DataSplit(**a["data"]) if "data" in a else None, a.get("warm_started"),
                   a.get("trials_target", 0), a.get("runtime", []))

    @classmethod
    def check(cls, study: optuna.Study, **fixed: object) -> None:
        """Refuse flags that differ from what the study recorded at creation: runs scored on another split, or
        under another budget or goal, would be ranked together with its own. Reads the attributes once, so a
        process that is writing a new study's first attributes meanwhile cannot make the two disagree."""
        attrs = study.user_attrs
        recorded = cls._from(attrs)
        for key, value in fixed.items():
            if key in attrs and (was := getattr(recorded, key)) != value:
                raise UserError(f"study {study.study_name!r} was searched with {key} {asdict(was)}; give the same "
                                "flags (or a new --study-name for a new search)")

    def save(self, study: optuna.Study) -> None:
        for key, value in asdict(self).items():
            if value is not None and study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)


@dataclass(frozen=True)
class SeedRun:
    """One training run of a candidate on one seed: the unit a confirmed score is the mean of."""

    seed: int
    val_score: float
    test_acc_last3: float | None  # for the record only
    trial: int  # the number of the trial that ran it: in the search study, or in its confirm study
    confirm: bool  # True: a confirm run (numbered in `<study>:confirm`); False: the search trial itself

    @property
    def source(self) -> str:
        return f"confirm run {self.trial}" if self.confirm else f"search trial {self.trial}"


@dataclass
class TrialRecord:
    number: int
    status: str  # one of STATUSES
    reason: str = ""
    candidate: Candidate | None = None
    params: int | None = None
    macs: int | None = None
    seconds: float | None = None
    history: list[dict] = field(default_factory=list)  # one dict per finished epoch (EpochStats fields)
    val_score: float | None = None  # mean val accuracy of the last SCORE_EPOCHS epochs (complete runs)
    test_acc: float | None = None  # of the final weights, for the record
    test_acc_last3: float | None = None  # mean over the last SCORE_EPOCHS epochs, for the record
    weights: str | None = None  # artifact id of the final weights
    worker: str | None = None
    warm_start: str | None = None  # the preset a warm-start trial was seeded with
    prune_from: int | None = None  # a warm-start trial: the first epoch the pruner may stop it at (None: never)
    move: str | None = None  # a local-search trial: the genes its move changed (`core.moves`)
    move_of: int | None = None  # ... of this trial's candidate
    shrink_of: int | None = None  # a shrink-search step (`runner.shrink`): the trial it scales down; not in --trials
    retry_of: int | None = None  # the interrupted trial this one retrains
    confirms: int | None = None  # in a confirm study: the search trial whose candidate this run re-trains
    seed: int | None = None  # in a confirm study: the training seed of this run
    seeds: list[SeedRun] = field(default_factory=list)  # filled by `attach_confirmations`
    value: float | None = None  # what Optuna was told (the goal's value), from the trial itself

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRecord:
        a = trial.user_attrs
        if trial.state in _STATE_STATUS:
            status = _STATE_STATUS[trial.state]
        elif trial.state == TrialState.FAIL:
            status = a["status"] if a.get("status") in ("interrupted", "requeued") else "failed"
        else:
            status = a.get("status", trial.state.name.lower())
        kept = {f.name for f in fields(cls)} - {"number", "status", "candidate", "seeds", "value"}
        return cls(
            number=trial.number,
            status=status,
            value=trial.value if trial.state == TrialState.COMPLETE else None,
            candidate=Candidate.from_dict(a["candidate"]) if "candidate" in a else None,
            **{k: v for k, v in a.items() if k in kept},
        )

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def origin(self) -> str:
        """Where a search trial's candidate came from, when not from TPE: its warm-start design or its move."""
        return self.warm_start or (f"{self.move} of #{self.move_of}" if self.move else "")

    @property
    def last_val(self) -> float | None:
        """The validation accuracy of the last evaluated epoch (what a pruned trial last told the pruner)."""
        return next((h["val_acc"] for h in reversed(self.history) if h.get("val_acc") is not None), None)

    @property
    def trained(self) -> bool:
        return self.status in TRAINED

    @property
    def own_run(self) -> SeedRun | None:
        if self.status != "complete" or self.val_score is None or self.candidate is None:
            return None
        return SeedRun(self.candidate.train.seed, self.val_score, self.test_acc_last3, self.number, confirm=False)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def mean_val(self) -> float | None:
        """Mean val score over the seeds run so far (the trial's own score when unconfirmed)."""
        return statistics.fmean(s.val_score for s in self.seeds) if self.seeds else self.val_score

    def sd_val(self) -> float | None:
        return statistics.stdev(s.val_score for s in self.seeds) if len(self.seeds) > 1 else None

    def _tests_last3(self) -> list[float]:
        return [s.test_acc_last3 for s in self.seeds if s.test_acc_last3 is not None]

    def mean_test_last3(self) -> float | None:
        values = self._tests_last3()
        return statistics.fmean(values) if values else self.test_acc_last3

    def sd_test_last3(self) -> float | None:
        values = self._tests_last3()
        return statistics.stdev(values) if len(values) > 1 else None


def write(trial: optuna.Trial, **attrs: object) -> None:
    """Set record fields on a running trial; unknown names are a bug, not a new attribute."""
    known = {f.name for f in fields(TrialRecord)} - {"number", "seeds", "value"}
    unknown = set(attrs) - known
    if unknown:
        raise TypeError(f"not a trial record field: {', '.join(sorted(unknown))}")
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


# what a search trial's retry keeps of its attributes
CARRIED = ("warm_start", "prune_from", "move", "move_of", "shrink_of")


def queued_design(trial: optuna.Trial) -> bool:
    """Whether the running trial is a design the search queued (a warm start, a local-search move or a shrink
    step), not sampled."""
    return "warm_start" in trial.user_attrs or "move" in trial.user_attrs


def prune_from(trial: optuna.Trial) -> int | None:
    """The first epoch at which the pruner may stop this running trial: 1 for a sampled one; what it was queued
    with for a warm-start design or a shrink step (None: never)."""
    queued = "warm_start" in trial.user_attrs or "shrink_of" in trial.user_attrs
    return trial.user_attrs.get("prune_from") if queued else 1


def search_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of a search as a record, completed ones with their seed runs (from the confirm study)."""
    confirm_name = study.study_name + CONFIRM_SUFFIX
    storage = storage_of(study)
    confirm = (optuna.load_study(study_name=confirm_name, storage=storage).get_trials(deepcopy=False)
               if confirm_name in optuna.get_all_study_names(storage) else [])
    return attach_confirmations(records(study.get_trials(deepcopy=False)), records(confirm))


def records(trials: list[FrozenTrial]) -> list[TrialRecord]:
    return [TrialRecord.from_trial(t) for t in trials]


def attach_confirmations(search: list[TrialRecord], confirm: list[TrialRecord]) -> list[TrialRecord]:
    """Give each completed search trial its seed runs: its own, then each confirmed seed once (first run wins)."""
    by_trial: dict[int, list[SeedRun]] = {}
    for c in confirm:
        if c.status == "complete" and c.confirms is not None and c.val_score is not None and c.seed is not None:
            by_trial.setdefault(c.confirms, []).append(
                SeedRun(c.seed, c.val_score, c.test_acc_last3, c.number, confirm=True))
    for r in search:
        own = r.own_run
        if own is None:
            continue
        runs = {own.seed: own}
        for run in sorted(by_trial.get(r.number, []), key=lambda s: s.trial):
            runs.setdefault(run.seed, run)
        r.seeds = sorted(runs.values(), key=lambda s: s.seed)
    return search
