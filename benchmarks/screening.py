"""How well does an early epoch's val accuracy predict the final ranking? Rank correlation on recorded studies, no
training: the evidence for where the first rung of successive halving sits, and whether a cheaper one would do.

Per study, the trials that trained to their last epoch with a val accuracy recorded at epoch e: the Spearman rank
correlation between that val accuracy and the trial's val score (mean of its last 3 epochs), and of the study's top
3 by val score, how many a cut at epoch e that keeps the best third would have kept (each against all the trials
with a value at e, the pruned ones included). Completed trials survived the recorded rungs, so their range is narrow
and the correlations are lower bounds of what the whole population would show.

    python benchmarks/screening.py studies/reference/*.db
    python benchmarks/screening.py --smoke  # studies/reference/smallest-992.db alone: a test
"""

from __future__ import annotations

import optuna
import pandas as pd
from study_files import parse_study_files, search_studies

EPOCHS = (1, 2, 3, 6, 9)


def study_rows(study: optuna.Study) -> list[dict]:
    """One row per epoch in EPOCHS: trials with a value there, complete ones, their rank correlation with the
    final val score, and how many of the top 3 complete trials a best-third cut at that epoch keeps."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("val_score")
            and not t.user_attrs.get("shrink_of")]
    top3 = sorted(done, key=lambda t: -t.user_attrs["val_score"])[:3]
    rows = []
    for e in EPOCHS:
        at = {t.number: t.intermediate_values[e] for t in trials if e in t.intermediate_values}
        final = pd.DataFrame([(at[t.number], t.user_attrs["val_score"]) for t in done if t.number in at],
                             columns=["early", "final"])
        if len(final) < 5:
            continue
        bar = sorted(at.values(), reverse=True)[max(len(at) // 3 - 1, 0)]
        rows.append({"study": study.study_name, "epoch": e, "with value": len(at), "complete": len(final),
                     "spearman": final.rank().corr().iloc[0, 1],  # Spearman: Pearson of the ranks
                     "top 3 kept": sum(at.get(t.number, -1) >= bar for t in top3 if t.number in at),
                     "top 3 with value": sum(t.number in at for t in top3)})
    return rows


def main() -> None:
    rows = [{"file": db.name, **r} for db, study in search_studies(parse_study_files(__doc__))
            for r in study_rows(study)]
    if not rows:
        raise SystemExit("no study with 5 or more complete trials valued at an early epoch")
    frame = pd.DataFrame(rows)
    print("| file | epoch | trials with a value | complete | Spearman early vs final "
          "| top 3 kept by a best-third cut |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in frame.itertuples():
        print(f"| {r.file} | {r.epoch} | {r._4} | {r.complete} | {r.spearman:.2f} | {r._7}/{r._8} |")
    print("\nper epoch over the studies: median Spearman, top 3 kept / with a value")
    for e, g in frame.groupby("epoch"):
        print(f"epoch {e}: {len(g)} studies, median Spearman {g['spearman'].median():.2f}, "
              f"top 3 kept {g['top 3 kept'].sum()}/{g['top 3 with value'].sum()}")


if __name__ == "__main__":
    main()
