"""Does a mean over more seeds pick better? Replayed on committed runs, no training.

studies/reference/small8k-gpu.db holds 14 designs under 8,000 params, each trained on 5 seeds (val score and test
accuracy, both means of the last 3 epochs, 5,000 val images). For k = 1..5 seeds, every draw of k of the 5 seeds
per design (the same seed subset for all designs, as confirmations run them) picks the design with the best mean
val score; reported: how often that pick is the design with the best 5-seed mean *test* accuracy, the pick's 5-seed
mean test (the held-out outcome a user gets), and the rank correlation between k-seed val means and 5-seed test
means over the 14 designs. Test accuracy is only read here, to judge the selection rule; nas20k never selects on it.

    python benchmarks/val_selection.py [--study small8k-gpu]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

import optuna

from nas20k.record import search_records

ROOT = Path(__file__).resolve().parents[1]


def spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        for i, j in enumerate(order):
            r[j] = float(i)
        return r

    return statistics.correlation(ranks(xs), ranks(ys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="small8k-gpu")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=args.study, storage=f"sqlite:///{ROOT}/studies/reference/{args.study}.db")
    designs = [r for r in search_records(study) if r.n_seeds >= 5]
    seeds = sorted({s.seed for s in designs[0].seeds})[:5]
    val = {r.number: {s.seed: s.val_score for s in r.seeds} for r in designs}
    test = {r.number: statistics.fmean(s.test_acc_last3 for s in r.seeds if s.seed in seeds) for r in designs}
    best_test = max(test, key=test.get)
    print(f"{args.study}: {len(designs)} designs x {len(seeds)} seeds; "
          f"best by 5-seed mean test: #{best_test} ({100 * test[best_test]:.3f} %)")
    print("| seeds k | draws | picks the best-test design | pick's 5-seed mean test (mean over draws, %) "
          "| rank corr. val(k) vs test(5) |")
    print("| --- | --- | --- | --- | --- |")
    for k in range(1, len(seeds) + 1):
        hits, outcome, corr = 0, [], []
        draws = list(itertools.combinations(seeds, k))
        for draw in draws:
            means = {n: statistics.fmean(v[s] for s in draw) for n, v in val.items()}
            pick = max(means, key=means.get)
            hits += pick == best_test
            outcome.append(test[pick])
            corr.append(spearman([means[n] for n in val], [test[n] for n in val]))
        print(f"| {k} | {len(draws)} | {hits}/{len(draws)} | {100 * statistics.fmean(outcome):.3f} "
              f"| {statistics.fmean(corr):.2f} |")


if __name__ == "__main__":
    main()
