"""What a running search tells a person: a model of how long it has left, and the live line's text.

The estimate is a model of the run, not the pace so far (which errs hours long while the first, unpruned
warm-start trials train): remaining epochs = the running trials' rest + the queued ones' + the trials still to
sample times the epochs a sampled trial trains, plus the confirmation runs; times the measured seconds per epoch,
over the workers. Epochs per sampled trial: the larger of the mean so far and a successive-halving prior that keeps
half of the trials at each rung, because survival rises as TPE learns where the good candidates are: in six
recorded studies the later half of the sampled trials trained 1.4-2.3x the epochs of the first half, and the mean
so far made the estimate 40-56 % short at 15 minutes (benchmarks/eta.py replays them). The range is that model at
the low and high end of its two measured inputs (mean +- one standard error of epochs per trial and of seconds per
epoch); none is shown before a first epoch.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from optuna.trial import FrozenTrial
from rich.console import Console

from nas20k.readers.record import NOT_RUN, TrialRecord, records
from nas20k.readers.tables import pct

MIN_FINISHED = 3  # sampled trials finished before their mean epochs replaces the prior
LOG_EVERY = 300  # seconds between progress lines in a log (no terminal): the ETA's record over a run


@dataclass(frozen=True)
class Plan:
    """What the run still has to do beyond the study's trials: its --trials target, workers and epochs per
    trial, and the confirmation runs to follow (at most; racing may drop some)."""

    target: int
    workers: int
    max_epochs: int
    confirm_runs: int = 0
    pruned: bool = True  # False for confirmation runs: each trains all its epochs
    rungs: tuple[int, ...] = (1, 3, 9)  # the pruner's (`pruners.rungs`)


def prior_epochs(max_epochs: int, rungs: tuple[int, ...], keep: float = 1 / 2) -> float:
    """Mean epochs of a sampled trial under successive halving that keeps `keep` of the trials at each rung."""
    total, alive, last = 0.0, 1.0, 0
    for rung in (r for r in rungs if r < max_epochs):
        total += alive * (rung - last)
        alive, last = alive * keep, rung
    return total + alive * (max_epochs - last)


def _mean_se(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0)


def estimate(recs: list[TrialRecord], plan: Plan) -> tuple[float, float] | None:
    """Seconds left (low, high), or None until an epoch has been timed."""
    epoch_seconds = [h["seconds"] for r in recs for h in r.history if h.get("seconds")]
    if not epoch_seconds:
        return None
    sampled = [r.epochs for r in recs if r.trained and not r.warm_start]
    prior = prior_epochs(plan.max_epochs, plan.rungs)
    if not plan.pruned:  # confirmation runs
        per_trial = (float(plan.max_epochs), 0.0)
    elif len(sampled) >= MIN_FINISHED:
        mean, se = _mean_se(sampled)
        per_trial = (max(mean, prior), se)
    else:
        per_trial = (prior, prior / 3)
    sec = _mean_se(epoch_seconds[-50:])
    running = [r for r in recs if r.status == "running"]
    waiting = [r for r in recs if r.status == "waiting"]
    to_sample = max(0, plan.target - sum(r.trained for r in recs) - len(running) - len(waiting))

    def seconds(epochs_per_trial: float, sec_per_epoch: float) -> float:
        unpruned = [r for r in running + waiting if r.warm_start and r.prune_from is None]
        left = sum(plan.max_epochs - r.epochs for r in unpruned)
        left += sum(max(1.0, min(plan.max_epochs, epochs_per_trial) - r.epochs)
                    for r in running + waiting if r not in unpruned)
        left += to_sample * epochs_per_trial + plan.confirm_runs * plan.max_epochs
        return left * sec_per_epoch / max(1, plan.workers)

    return (seconds(max(1.0, per_trial[0] - per_trial[1]), sec[0] - sec[1]),
            seconds(per_trial[0] + per_trial[1], sec[0] + sec[1]))


def minutes(seconds: float) -> str:
    m = seconds / 60
    return f"{m:.0f} min" if m < 100 else f"{m / 60:.1f} h"


def eta_text(recs: list[TrialRecord], plan: Plan) -> str:
    est = estimate(recs, plan)
    if est is None:
        return "eta after the first epoch"
    low, high = est
    return f"eta {minutes(low)}" if minutes(low) == minutes(high) else f"eta {minutes(low)}-{minutes(high)}"


def running_text(recs: list[TrialRecord], max_epochs: int) -> str:
    """`#12 ep 3/20 val 98.9%` per running trial: the epoch it is in and its last validation accuracy."""
    parts = []
    for r in recs:
        if r.status != "running" or r.candidate is None:
            continue
        vals = [h["val_acc"] for h in r.history if h.get("val_acc") is not None]
        parts.append(f"#{r.number} ep {min(r.epochs + 1, max_epochs)}/{max_epochs}"
                     + (f" val {vals[-1]:.1%}" if vals else ""))
    return "  ".join(parts)


def first_result_text(recs: list[TrialRecord], max_epochs: int, seconds_per_epoch: float) -> str:
    """When the first score should arrive: the first queued design trains its epochs at the probed speed."""
    first = next((r for r in recs if r.status in ("waiting", "running")), None)
    epochs = max_epochs if first is not None and first.warm_start and first.prune_from is None else 3
    return (f"first score expected in ~{minutes(epochs * seconds_per_epoch)} "
            f"({epochs} epochs at ~{seconds_per_epoch:.0f} s/epoch)")


class Reporter:
    """Prints one line per trial that finishes, and either a live line (terminal) or a progress line every
    LOG_EVERY seconds (logs): trained count, best score, running trials with their last val, an ETA range.
    `replan`, if given, is asked for the plan again (with the trials) whenever a trial finishes: a race's plan grows
    when a leader falls and the next candidate moves into the top."""

    def __init__(self, out: Console, plan: Plan, before: list[FrozenTrial], quiet: bool, unit: str = "trained",
                 replan: Callable[[list[FrozenTrial]], Plan] | None = None) -> None:
        self.out, self.plan, self.quiet, self.unit, self.replan = out, plan, quiet, unit, replan
        self.seen = {r.number for r in records(before) if r.status not in ("running", "waiting")}
        self.start = self.logged = time.monotonic()
        self.live = None if quiet or not self.out.is_terminal else self.out.status("")
        if self.live:
            self.live.start()

    def line(self, r: TrialRecord) -> str:
        text = f"val {pct(r.val_score)} test {pct(r.test_acc)}" if r.status == "complete" else r.reason
        who = f"seed {r.seed} of #{r.confirms}" if r.confirms is not None else r.origin
        params = f"{r.params:,}p" if r.params is not None else ""
        return f"#{r.number:<3} {r.status:<9} {params:>8}  {text}  {who}".rstrip()[: self.out.width]

    def __call__(self, trials: list[FrozenTrial]) -> None:
        recs = records(trials)
        finished = [r for r in recs if r.number not in self.seen and r.status not in NOT_RUN]
        for r in finished:
            self.seen.add(r.number)
            if not self.quiet:
                self.out.print(self.line(r))
        if finished and self.replan:
            self.plan = self.replan(trials)
        done = sum(r.trained for r in recs)
        best = max((r.val_score for r in recs if r.val_score is not None), default=None)
        status = f"{self.unit} {done}/{self.plan.target}  best {pct(best)}  {eta_text(recs, self.plan)}"
        if self.live:
            self.live.update(f"{status}\n{running_text(recs, self.plan.max_epochs)}"[: 2 * self.out.width])
        elif not self.quiet and time.monotonic() - self.logged >= LOG_EVERY:
            self.logged = time.monotonic()
            self.out.print(f"[{(self.logged - self.start) / 60:.0f} min] {status}")

    def stop(self) -> None:
        if self.live:
            self.live.stop()
