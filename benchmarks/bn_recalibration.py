"""Does recomputing BatchNorm's statistics on clean images help, and how? Paired, on committed weights, no training.

Every completed run in the given studies (search trials and confirm runs) left its final weights as an artifact.
Each is evaluated four ways on the val and test sets: as trained (torch's running averages over augmented
images, Dropout on), after torch's `swa_utils.update_bn` (recomputed in train mode: Dropout on), and after
`nas20k.core.train.recalibrate_bn` (Dropout off) on the first 10,000 and on all 55,000 training images. The same
weights are compared, so the difference is the statistics alone. Identical runs (the same candidate and seed in
two studies: the CPU path is deterministic) count once. Only runs recorded without recalibration are used.

    python benchmarks/bn_recalibration.py studies/reference/smallest-9925.db studies/reference/smallest-992.db
    python benchmarks/bn_recalibration.py --smoke  # the first 2 runs of smallest-9925.db, 512 images: a test
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import optuna
import torch
from torch.optim.swa_utils import update_bn

from nas20k.core.data import load_mnist
from nas20k.core.train import RECALIBRATE_IMAGES, evaluate, recalibrate_bn
from nas20k.readers.record import CONFIRM_SUFFIX, records
from nas20k.runner.storage import default_artifacts

SMOKE_DB = Path(__file__).resolve().parents[1] / "studies" / "reference" / "smallest-9925.db"


def runs(db: Path) -> list[tuple[str, int, torch.nn.Module, Path]]:
    """(candidate and seed as JSON, params, model, weights file) of every completed run in the studies of `db`."""
    storage = f"sqlite:///{db}"
    out = []
    for summary in optuna.get_all_study_summaries(storage):
        search = summary.study_name.removesuffix(CONFIRM_SUFFIX)
        store = default_artifacts(storage, search)
        for r in records(optuna.load_study(study_name=summary.study_name, storage=storage).trials):
            if r.status == "complete" and r.weights and not r.candidate.train.recalibrate_bn:
                seed = r.candidate.train.seed if r.seed is None else r.seed  # a confirm run records its seed apart
                key = json.dumps([r.candidate.to_dict(), seed], sort_keys=True)
                out.append((key, r.params, r.candidate.spec.build(), store / r.weights))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dbs", nargs="*", type=Path, help="SQLite study files (their artifacts next to them)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--smoke", action="store_true", help="the smallest setting (a test): the first 2 runs of "
                    f"{SMOKE_DB.name} (unless given), on 512 train, val and test images")
    args = ap.parse_args()
    if args.smoke and not args.dbs:
        args.dbs = [SMOKE_DB]
    if not args.dbs:
        ap.error("give at least one SQLite study file (or --smoke)")
    torch.set_num_threads(1)  # a forward pass per run: threads buy little, and it may share the cores
    data = load_mnist(args.data_dir, val_size=512, limit=512) if args.smoke else load_mnist(args.data_dir)
    ways = {
        "update_bn (Dropout on), 10k": lambda m: update_bn(
            [data.train.x[i : i + 1000] for i in range(0, min(RECALIBRATE_IMAGES, len(data.train)), 1000)], m),
        "recalibrate_bn, 10k": lambda m: recalibrate_bn(m, data.train.x[:10_000], 1000),
        "recalibrate_bn, 5k, batch 500": lambda m: recalibrate_bn(m, data.train.x[:5000], 500),
        "recalibrate_bn, all 55k": lambda m: recalibrate_bn(m, data.train.x),
    }
    seen, diffs = set(), {way: [] for way in ways}
    for db in args.dbs:
        found = runs(db)
        for key, params, model, weights in found[:2] if args.smoke else found:
            if key in seen:
                continue
            seen.add(key)
            state = torch.load(weights)
            model.load_state_dict(state)
            before = evaluate(model, data.val), evaluate(model, data.test)
            line = [f"{params:>6,} params  val {before[0]:.2%} test {before[1]:.2%}"]
            for way, fn in ways.items():
                model.load_state_dict(state)
                fn(model)
                model.eval()
                d = evaluate(model, data.val) - before[0], evaluate(model, data.test) - before[1]
                diffs[way].append(d)
                line.append(f"{100 * d[0]:+.2f}/{100 * d[1]:+.2f}")
            print("  ".join(line), flush=True)
    n = len(seen)
    print(f"\n{n} distinct runs; change in accuracy points vs as trained, mean ± sd over runs (test: better / worse)")
    for way, d in diffs.items():
        val, test = [100 * a for a, _ in d], [100 * b for _, b in d]
        print(f"{way:30s} val {statistics.fmean(val):+.3f} ± {statistics.stdev(val):.3f}   "
              f"test {statistics.fmean(test):+.3f} ± {statistics.stdev(test):.3f}   "
              f"({sum(t > 0 for t in test)} / {sum(t < 0 for t in test)})")


if __name__ == "__main__":
    main()
