"""SiLU and GELU in place of ReLU on one trial of a study: do they lift its mean val score by more than its seeds'
spread? (benchmarks/small_recipes.py --moves activation asks the same of the best net under 3,800 params.)

The trial's design and recipe, seeds 0..N-1, in the runtime `auto` picks here (bf16 on a CPU with hardware bf16),
two runs at a time on one thread each. The ReLU row is the trial's recorded runs (its search run, seed 0, and its
confirmation runs, seeds 1..): on the CPU a seed's run reproduces to the last digit, so retraining them would only
cost time; `--rerun-relu` trains them again anyway. Prints one row per run, then mean ± sd of the val score and of
test accuracy (both means of the last 3 epochs). Choose by val; test is reported, never read to choose.

    python benchmarks/activations.py --storage sqlite:///studies/reference/nas20k-quiet.db --study-name nas20k-quiet \
        --trial 35 [--seeds 5] [--rerun-relu] [--jobs 2] [--data-dir ../shared/data]
    python benchmarks/activations.py --smoke  # that trial, 1 seed, 1 epoch on 512 images: a test
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
from side_by_side import compare, mean_sd
from small_recipes import spec

from nas20k.core.data import default_data_dir
from nas20k.core.runtime import resolve
from nas20k.readers.record import search_records

SMOKE_STORAGE = f"sqlite:///{Path(__file__).resolve().parents[1]}/studies/reference/nas20k-quiet.db"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage")
    parser.add_argument("--study-name")
    parser.add_argument("--trial", type=int)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rerun-relu", action="store_true")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--smoke", action="store_true", help="the smallest setting (a test): trial 35 of "
                        "studies/reference/nas20k-quiet.db unless given, 1 seed, 1 epoch on 512 images")
    args = parser.parse_args()
    if args.smoke:  # trial 35 of nas20k-quiet unless given
        args.storage = args.storage or SMOKE_STORAGE
        args.study_name = args.study_name or "nas20k-quiet"
        args.trial = 35 if args.trial is None else args.trial
        args.seeds = 1
    if None in (args.storage, args.study_name, args.trial):
        parser.error("--storage, --study-name and --trial are required (or --smoke)")
    study = optuna.load_study(study_name=args.study_name, storage=args.storage)
    record = next(r for r in search_records(study) if r.number == args.trial)
    recorded = sorted(record.seeds, key=lambda s: s.seed)[:args.seeds]
    if not args.rerun_relu and [s.seed for s in recorded] != list(range(args.seeds)):
        raise SystemExit(f"trial {args.trial} has recorded seeds {[s.seed for s in recorded]}, not 0-{args.seeds - 1}: "
                         "pass --rerun-relu")
    runtime = resolve("cpu", "auto")
    activations = ["relu", "silu", "gelu"] if args.rerun_relu else ["silu", "gelu"]
    variants = {a: (lambda c, m=spec(activation=a): (m(c), runtime)) for a in activations}
    design = f"#{args.trial} ({record.params:,} params)"
    compare({design: record.candidate}, variants, args.seeds, args.jobs, str(args.data_dir or default_data_dir()),
            smoke=args.smoke)
    if not args.rerun_relu:
        print(f"| {design} | relu, as recorded | {len(recorded)} | {mean_sd([s.val_score for s in recorded])} "
              f"| {mean_sd([s.test_acc_last3 for s in recorded])} | - |")


if __name__ == "__main__":
    main()
