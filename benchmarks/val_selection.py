"""Does a mean over more seeds, or a larger validation split, pick better? Replayed on committed runs, no training.

studies/reference/small8k-gpu.db holds 14 designs under 8,000 params, each trained on 5 seeds (val score and test
accuracy, both means of the last 3 epochs, 5,000 val images). For k = 1..5 seeds, every draw of k of the 5 seeds
per design (the same seed subset for all designs, as confirmations run them) picks the design with the best mean
val score; reported: how often that pick is the design with the best 5-seed mean *test* accuracy, the pick's 5-seed
mean test (the held-out outcome a user gets), and the rank correlation between k-seed val means and 5-seed test
means over the 14 designs. Test accuracy is only read here, to judge the selection rule; nas20k never selects on it.

    python benchmarks/val_selection.py [--study small8k-gpu] [--smoke]

With `--split`: how much of a val score's spread over seeds a larger split would remove. Over every design in the
committed studies trained on >= 3 seeds with test recorded, the seeds' deviations from their design's mean give a
pooled variance of val (s_vv), of test (s_tt) and their covariance (s_vt). Only a run's real quality moves both
scores (the splits share no images), so s_vt estimates the quality's variance over seeds and s_vv - s_vt the
noise of scoring on these 5,000 images, which shrinks as 1/size for a larger split. Prints both parts and the sd
of a k-seed mean val score they predict for splits of 5,000, 10,000 and 20,000 images (the training set shrinks by
as many; its effect on accuracy is not in this model).

    python benchmarks/val_selection.py --split [--max-params 10000]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

import optuna

from nas20k.readers.record import CONFIRM_SUFFIX, search_records

ROOT = Path(__file__).resolve().parents[1]


def spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        for i, j in enumerate(order):
            r[j] = float(i)
        return r

    return statistics.correlation(ranks(xs), ranks(ys))


def split_noise(max_params: int) -> None:
    """The --split analysis (module docstring)."""
    runs: list[list[tuple[float, float]]] = []
    for db in sorted((ROOT / "studies" / "reference").glob("*.db")):
        storage = f"sqlite:///{db}"
        for name in optuna.get_all_study_names(storage):
            if name.endswith(CONFIRM_SUFFIX):
                continue
            for r in search_records(optuna.load_study(study_name=name, storage=storage)):
                pairs = [(s.val_score, s.test_acc_last3) for s in r.seeds if s.test_acc_last3 is not None]
                if len(pairs) >= 3 and r.params is not None and r.params < max_params:
                    runs.append(pairs)
    dof = sum(len(p) - 1 for p in runs)

    def pooled(i: int, j: int) -> float:
        total = 0.0
        for pairs in runs:
            mi, mj = statistics.fmean(p[i] for p in pairs), statistics.fmean(p[j] for p in pairs)
            total += sum((p[i] - mi) * (p[j] - mj) for p in pairs)
        return total / dof

    s_vv, s_tt, s_vt = pooled(0, 0), pooled(1, 1), pooled(0, 1)
    quality = max(s_vt, 0.0)
    noise = s_vv - quality
    pct = 100  # variances are printed in (percentage points)^2 as sds in points
    print(f"{len(runs)} designs under {max_params:,} params, {sum(map(len, runs))} runs ({dof} degrees of freedom)")
    print(f"sd over seeds: val {pct * s_vv ** 0.5:.3f}, test {pct * s_tt ** 0.5:.3f}; "
          f"correlation of val and test {s_vt / (s_vv * s_tt) ** 0.5:.2f}")
    print(f"val's seed variance = quality {pct ** 2 * quality:.4f} + 5,000-image scoring noise "
          f"{pct ** 2 * noise:.4f} (points^2): the split is {noise / s_vv:.0%} of it")
    # Check: if both spreads are mostly scoring noise, their ratio follows the error rates and the two split sizes.
    err_v = 1 - statistics.fmean(p[0] for pairs in runs for p in pairs)
    err_t = 1 - statistics.fmean(p[1] for pairs in runs for p in pairs)
    binomial = (err_v * (1 - err_v) / 5000) / (err_t * (1 - err_t) / 10_000)
    print(f"check: val's noise / test's noise {noise / (s_tt - quality):.1f}; "
          f"binomial on {100 * err_v:.2f} % / {100 * err_t:.2f} % error, 5,000 / 10,000 images: {binomial:.1f}")
    print("\n| val images | sd of a val score | 3-seed mean | 5-seed mean |")
    print("| --- | --- | --- | --- |")
    for size in (5000, 10_000, 20_000):
        var = quality + noise * 5000 / size
        print(f"| {size:,} | {pct * var ** 0.5:.3f} | {pct * (var / 3) ** 0.5:.3f} | {pct * (var / 5) ** 0.5:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="small8k-gpu")
    parser.add_argument("--split", action="store_true", help="the split-size analysis instead")
    parser.add_argument("--max-params", type=int, default=10_000, help="with --split: designs under this size")
    parser.add_argument("--smoke", action="store_true",
                        help="the smallest setting (a test): the selection replay on one study, which takes seconds")
    args = parser.parse_args()
    args.split = args.split and not args.smoke
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.split:
        split_noise(args.max_params)
        return
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
