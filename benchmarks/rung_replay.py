"""Could ASHA's last rung move from epoch 9 to epoch 6? A replay on recorded studies, no training.

Every trial that reached epoch 9 is replayed through successive halving's rule (Optuna's: a trial goes on if its
value is at least the (n // 3)-th best of the n values reported at that rung so far, the best one while n < 3) at
epoch 6 and at epoch 9, in the order the trials reached that epoch. Only studies that validated every epoch
qualify (since the search validates only the epochs its pruner reads, newer studies have no epoch-6 value). A
warm-start design exempt from pruning stays exempt. Per study: how many the two rungs prune, how often they
disagree, the epochs the move would save (a trial kept at 6 trains to the end, as the last rung's survivors do),
and which of the study's top 3 complete trials by val score each rung would have pruned (the replayed rung at 9
is the control: the recorded search kept them, in its own order and with its own pruner).

    python benchmarks/rung_replay.py studies/reference/nas20k.db studies/reference/small8k-gpu.db ...
    python benchmarks/rung_replay.py --smoke  # studies/reference/smallest-992.db alone: a test
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial
from study_files import parse_study_files, search_studies


def reached_at(t: FrozenTrial, epoch: int) -> float:
    """Wall-clock time the trial finished `epoch` (its history's `at`), else (a history recorded before `at`
    existed) its start plus the epoch count."""
    h = t.user_attrs.get("history") or []
    at = h[epoch - 1].get("at") if len(h) >= epoch else None
    return at if at is not None else t.datetime_start.timestamp() + epoch


def bar_index(n: int) -> int:
    """Successive halving's bar among the n values reported at a rung so far, best first (Optuna's rule): the
    (n // 3)-th best, the best one while n < 3."""
    return max(n // 3 - 1, 0)


def replay(trials: list[FrozenTrial], epoch: int) -> set[int]:
    """The numbers of the trials successive halving prunes at `epoch`, replayed in the order they reached it."""
    seen: list[float] = []
    pruned = set()
    for t in sorted(trials, key=lambda t: reached_at(t, epoch)):
        value = t.intermediate_values[epoch]
        seen.append(value)
        bar = sorted(seen, reverse=True)[bar_index(len(seen))]
        exempt = "warm_start" in t.user_attrs and t.user_attrs.get("prune_from") is None
        if value < bar and not exempt:
            pruned.add(t.number)
    return pruned


def main() -> None:
    dbs = parse_study_files(__doc__)
    totals = {"reached 9": 0, "pruned at 6": 0, "pruned at 9": 0, "disagree": 0, "epochs saved": 0,
              "top 3 pruned at 6": 0, "top 3 pruned at 9": 0}
    for db, study in search_studies(dbs):
        max_epochs = study.user_attrs["budget"]["max_epochs"]
        every = study.get_trials(deepcopy=False)
        trials = [t for t in every if all(e in t.intermediate_values for e in range(1, 10))]
        if not trials:
            print(f"{db.name}: no trial with a value at every epoch to 9; skipped")
            continue
        at6, at9 = replay(trials, 6), replay(trials, 9)
        saved = sum((9 if t.number in at9 else max_epochs) - (6 if t.number in at6 else max_epochs)
                    for t in trials)
        done = sorted((t for t in every if t.state == optuna.trial.TrialState.COMPLETE
                       and t.user_attrs.get("val_score")), key=lambda t: -t.user_attrs["val_score"])[:3]
        lost = {e: [f"#{t.number} {t.user_attrs['val_score']:.2%}" for t in done if t.number in at]
                for e, at in ((6, at6), (9, at9))}
        print(f"{db.name:24} {max_epochs} ep: {len(trials):3} reached 9; pruned at 6 {len(at6):3}, at 9 "
              f"{len(at9):3}, disagree {len(at6 ^ at9):3}; epochs saved {saved:+4}; of the top 3 by val "
              f"({', '.join(f'#{t.number}' for t in done)}) pruned at 6: {', '.join(lost[6]) or 'none'}, "
              f"at 9: {', '.join(lost[9]) or 'none'}")
        for key, value in zip(totals, (len(trials), len(at6), len(at9), len(at6 ^ at9), saved, len(lost[6]),
                                       len(lost[9])), strict=True):
            totals[key] += value
    print("total: " + ", ".join(f"{k} {v}" for k, v in totals.items()))


if __name__ == "__main__":
    main()
