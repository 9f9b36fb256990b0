"""How good is the ETA a search prints? Replayed on a committed study, no training.

A search's progress line shows `progress.estimate` of the trials as they stood. This script rebuilds the study as
it stood at given minutes after the command's first trial started (trials not yet started then are dropped, or
waiting if they were queued at the start; running ones keep the epochs finished by then), computes the estimate
the command would have printed with the plan it ran (search, then the raced confirmation), and sets it against
the time the command actually had left (to the last confirmation run's end). Prints one row per minute mark, the
error of the estimate's midpoint last.

    python benchmarks/eta.py [--storage sqlite:///studies/reference/nas20k-quiet.db] [--study nas20k-quiet]
                             [--top 3] [--seeds 3] [--workers 2] [--at 5 15 30 45 60] [--smoke]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import datetime, timedelta

import optuna
from optuna.trial import FrozenTrial

from nas20k.readers.progress import Plan, estimate
from nas20k.readers.record import CONFIRM_SUFFIX, StudyMeta, TrialRecord


def as_of(trials: list[FrozenTrial], t: datetime, queued_at_start: bool) -> list[TrialRecord]:
    """The records as the progress line saw them at `t`."""
    out = []
    for ft in trials:
        r = TrialRecord.from_trial(ft)
        if ft.datetime_start is None or ft.datetime_start > t:
            if queued_at_start and (r.warm_start or r.retry_of is not None):
                out.append(replace(r, status="waiting", history=[], val_score=None))
            continue
        if ft.datetime_complete is not None and ft.datetime_complete <= t:
            out.append(r)
            continue
        seen = [h for h in r.history if h.get("at", 0) <= t.timestamp()]
        out.append(replace(r, status="running", history=seen, val_score=None))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", default="sqlite:///studies/reference/nas20k-quiet.db")
    parser.add_argument("--study", default="nas20k-quiet")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--at", type=float, nargs="+", default=[5, 15, 30, 45, 60])
    parser.add_argument("--smoke", action="store_true", help="the smallest setting (a test): minute 5 only")
    args = parser.parse_args()
    if args.smoke:
        args.at = [5]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = optuna.load_study(study_name=args.study, storage=args.storage)
    confirm = optuna.load_study(study_name=args.study + CONFIRM_SUFFIX, storage=args.storage)
    # the command's own runs: a later `nas20k confirm --seeds 5` added seeds the command never ran
    meta, s_trials = StudyMeta.of(search), search.get_trials()
    c_trials = [t for t in confirm.get_trials() if t.user_attrs.get("seed", 0) < args.seeds]
    start = min(t.datetime_start for t in s_trials if t.datetime_start)
    search_end = max(t.datetime_complete for t in s_trials if t.datetime_complete)
    end = max([search_end, *(t.datetime_complete for t in c_trials if t.datetime_complete)])
    epochs, runs = meta.budget.max_epochs, args.top * (args.seeds - 1)
    print(f"{args.study}: search {(search_end - start).total_seconds() / 60:.1f} min, command "
          f"{(end - start).total_seconds() / 60:.1f} min ({len(c_trials)} confirmation runs, plan: at most {runs})")
    print("| minute | phase | estimate (low-high) | actual left | error of the midpoint |")
    print("| --- | --- | --- | --- | --- |")
    for minute in args.at:
        t = start + timedelta(minutes=minute)
        if t >= end:
            break
        if t < search_end:
            phase, recs = "search", as_of(s_trials, t, queued_at_start=True)
            plan = Plan(meta.trials_target, args.workers, epochs, confirm_runs=runs)
        else:
            phase, recs = "confirm", as_of(c_trials, t, queued_at_start=False)
            plan = Plan(runs, args.workers, epochs, pruned=False)
        est = estimate(recs, plan)
        left = (end - t).total_seconds()
        if est is None:
            print(f"| {minute:g} | {phase} | none yet | {left / 60:.1f} min | - |")
            continue
        mid = (est[0] + est[1]) / 2
        print(f"| {minute:g} | {phase} | {est[0] / 60:.1f}-{est[1] / 60:.1f} min | {left / 60:.1f} min "
              f"| {100 * (mid - left) / left:+.0f} % |")


if __name__ == "__main__":
    main()
