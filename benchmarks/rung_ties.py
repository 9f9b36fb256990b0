"""Would a strict bar at successive halving's rungs (a tie with the bar is no evidence of being better) make the
default search cheaper without pruning the best trials? A replay on recorded studies, no training.

Why ask: val accuracy on 5,000 images moves in steps of 0.02 points, so trials tie at a rung, and Optuna's rule
(a trial goes on if its value is at least the (n // 3)-th best of the n values reported at that rung so far, the
best one while n < 3) keeps every tie. In `sbs-t-46b7359` three trials tied the lead's 99.32 % at epoch 9 and
trained on to epoch 20. Every trial with a value at each rung (1, 3, 9) is replayed in the order it reached
that rung, through Optuna's rule and through the strict one (above the bar, or alone at the top); a trial pruned
at a rung in the replay reports nothing later, so it leaves the later rungs' bars. Exempt as in the search: the
lead warm start, a follower before its `prune_from`, a shrink step. Per study: the epochs its trials trained,
as recorded and under each replay (a kept trial trains as it did), and which of its top 3 complete trials by val
score each replay prunes (Optuna's rule is the control: where the search ran it, the replay keeps them).

    python benchmarks/rung_ties.py studies/reference/*.db
    python benchmarks/rung_ties.py --smoke  # studies/reference/smallest-992.db alone: a test
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState
from rung_replay import bar_index, reached_at
from study_files import parse_study_files, search_studies

RUNGS = (1, 3, 9)  # the default pruner's (pruners.rungs("asha", 20))


def exempt(t: FrozenTrial, rung: int) -> bool:
    a = t.user_attrs
    if a.get("shrink_of") is not None:
        return True
    return "warm_start" in a and (a.get("prune_from") is None or rung < a["prune_from"])


def replay(trials: list[FrozenTrial], max_epochs: int, strict: bool) -> dict[int, int]:
    """The epoch each trial is pruned at, by trial number (kept trials are absent)."""
    pruned: dict[int, int] = {}
    for rung in (r for r in RUNGS if r < max_epochs):
        seen: list[float] = []
        reached = [t for t in trials if t.number not in pruned and rung in t.intermediate_values]
        for t in sorted(reached, key=lambda t: reached_at(t, rung)):
            value = t.intermediate_values[rung]
            seen.append(value)
            k = bar_index(len(seen))
            bar = sorted(seen, reverse=True)[k]
            keep = value > bar or value == bar and (not strict or k == 0 and seen.count(value) == 1)
            if not keep and not exempt(t, rung):
                pruned[t.number] = rung
    return pruned


def epochs(trials: list[FrozenTrial], max_epochs: int, pruned: dict[int, int]) -> int:
    return sum(pruned.get(t.number, max(t.intermediate_values) if t.state == TrialState.PRUNED else max_epochs)
               for t in trials)


def main() -> None:
    dbs = parse_study_files(__doc__)
    totals = {"recorded": 0, ">=": 0, ">": 0, "top 3 lost >=": 0, "top 3 lost >": 0}
    for db, study in search_studies(dbs):
        max_epochs = study.user_attrs["budget"]["max_epochs"]
        trials = [t for t in study.get_trials(deepcopy=False)
                  if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and 1 in t.intermediate_values]
        if len(trials) < 5:
            continue
        top = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("val_score")
                      and t.user_attrs.get("shrink_of") is None), key=lambda t: -t.user_attrs["val_score"])[:3]
        row = {"recorded": epochs(trials, max_epochs, {})}
        lost = {}
        for rule, strict in ((">=", False), (">", True)):
            pruned = replay(trials, max_epochs, strict)
            row[rule] = epochs(trials, max_epochs, pruned)
            lost[rule] = [f"#{t.number} {t.user_attrs['val_score']:.2%}" for t in top if t.number in pruned]
            row[f"top 3 lost {rule}"] = len(lost[rule])
        print(f"{db.name:24} {study.study_name:20} {max_epochs:2} ep: epochs recorded {row['recorded']:4}, "
              f"replayed >= {row['>=']:4}, > {row['>']:4}; of the top 3 by val pruned by >=: "
              f"{', '.join(lost['>=']) or 'none'}; by >: {', '.join(lost['>']) or 'none'}")
        for key in totals:
            totals[key] += row[key]
    print("total: " + ", ".join(f"{k} {v}" for k, v in totals.items()))


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    main()
