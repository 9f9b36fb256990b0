"""Where did a search's time go, and was the machine as fast as the last time? Two searches' committed studies side
by side, phase by phase, no training.

A wall time measured once on a shared 2-core machine says as much about the machine that day as about the code.
Runs both searches trained identically (the same candidate on the same seed: a warm-start design, a replayed
winner's confirmation seeds) are the same work, so the median ratio of their seconds is how fast the second
search's machine was against the first's; each phase of the second search divided by it is what it would have
taken on the first one's machine. Prints both searches' phases (search: first trial's start to last trial's end;
confirm: the same over the `:confirm` study), their work (trained trials, epochs, training seconds, mean params),
the identical runs, and the second's walls at the first's machine speed.

    python benchmarks/search_time.py BEFORE.db AFTER.db [--studies NAME_BEFORE NAME_AFTER]
    python benchmarks/search_time.py --smoke   # sbs-t-74d2d0e.db against sbs-t-46b7359.db
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import optuna

from nas20k.readers.record import CONFIRM_SUFFIX, TrialRecord, records

REFERENCE = Path(__file__).resolve().parents[1] / "studies" / "reference"
SMOKE = (REFERENCE / "sbs-t-74d2d0e.db", REFERENCE / "sbs-t-46b7359.db")


@dataclass
class Phase:
    """One phase of a search: its wall time and the training it did."""

    wall: float  # seconds, first run's start to last run's end
    trained: int
    epochs: int
    seconds: float  # summed over its runs (workers in parallel count each)
    mean_params: float


def phase(trials: list[optuna.trial.FrozenTrial], recs: list[TrialRecord]) -> Phase | None:
    """The phase of these trials (`recs`: their records)."""
    ran = [t for t in trials if t.datetime_start and t.datetime_complete]
    trained = [r for r in recs if r.trained and r.seconds]
    if not trained:
        return None
    wall = (max(t.datetime_complete for t in ran) - min(t.datetime_start for t in ran)).total_seconds()
    return Phase(wall, len(trained), sum(r.epochs for r in trained), sum(r.seconds for r in trained),
                 statistics.fmean(r.params for r in trained))


def run_key(r: TrialRecord) -> str:
    """What makes two complete runs the same work: the candidate with the seed it trained on."""
    c = r.candidate if r.seed is None else replace(r.candidate, train=replace(r.candidate.train, seed=r.seed))
    return json.dumps(c.to_dict(), sort_keys=True)


def load(db: Path, name: str | None) -> tuple[str, dict[str, Phase | None], dict[str, float]]:
    """The study's name, its phases, and the seconds of each complete full run by `run_key`."""
    storage = f"sqlite:///{db}"
    names = optuna.get_all_study_names(storage)
    name = name or next(n for n in names if not n.endswith(CONFIRM_SUFFIX))
    studies = {"search": name, "confirm": name + CONFIRM_SUFFIX}
    trials = {k: optuna.load_study(study_name=n, storage=storage).get_trials(deepcopy=False)
              for k, n in studies.items() if n in names}
    recs = {k: records(ts) for k, ts in trials.items()}
    runs = {run_key(r): r.seconds for rs in recs.values() for r in rs
            if r.status == "complete" and r.candidate is not None and r.seconds}
    return name, {k: phase(ts, recs[k]) for k, ts in trials.items()}, runs


def minutes(s: float) -> str:
    return f"{s / 60:.1f} min"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dbs", nargs="*", type=Path, help="the two SQLite study files: before, after")
    ap.add_argument("--studies", nargs=2, metavar=("BEFORE", "AFTER"), help="study names (default: each file's first)")
    ap.add_argument("--smoke", action="store_true", help="sbs-t-74d2d0e.db against sbs-t-46b7359.db (a test)")
    args = ap.parse_args()
    dbs = list(SMOKE) if args.smoke and not args.dbs else args.dbs
    if len(dbs) != 2:
        ap.error("give two SQLite study files (before, after), or --smoke")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (n0, p0, r0), (n1, p1, r1) = (load(db, name) for db, name in zip(dbs, args.studies or (None, None), strict=True))

    print("| study | phase | wall | trained | epochs | training s | mean params |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, phases in ((n0, p0), (n1, p1)):
        for k, p in phases.items():
            if p:
                print(f"| {name} | {k} | {minutes(p.wall)} | {p.trained} | {p.epochs} | {p.seconds:,.0f} "
                      f"| {p.mean_params:,.0f} |")
    shared = sorted(set(r0) & set(r1))
    ratios = [r1[k] / r0[k] for k in shared]
    print(f"\nidentical runs in both: {len(shared)}; seconds {n1} / {n0}: "
          + ", ".join(f"{x:.3f}" for x in ratios))
    if not ratios:
        print("no run in common: the machines cannot be compared")
        return
    speed = statistics.median(ratios)
    total0 = sum(p.wall for p in p0.values() if p)
    total1 = sum(p.wall for p in p1.values() if p)
    print(f"machine ratio (median of {len(ratios)}): {speed:.3f}")
    print(f"search + confirm wall: {n0} {minutes(total0)}; {n1} {minutes(total1)} as measured, "
          f"{minutes(total1 / speed)} at {n0}'s machine speed; ratio {total1 / speed / total0:.3f}")


if __name__ == "__main__":
    main()
