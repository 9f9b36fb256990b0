"""Accuracy parity of the CPU's bf16 training path against fp32, before bf16 becomes `--precision auto`'s choice.

Two designs, 3 seeds each, fp32 and bf16 (+ channels_last) side by side on the full split (55k train, 5k val):
firekind-6174 with its published recipe for 15 epochs, and the committed winner (studies/best: spec + recipe) for
20 epochs. Prints one row per run, then mean ± sd of the val score and of test accuracy (both means of the last 3
epochs) per design and precision. Runs go two at a time, one thread each (what a 2-core search does).

    python benchmarks/precision_parity.py [--seeds 3] [--jobs 2] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
from pathlib import Path

import torch

from nas20k.data import default_data_dir, load_mnist
from nas20k.factory import ArchSpec
from nas20k.runtime import Runtime
from nas20k.space import Candidate, warm_start
from nas20k.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = {"fp32": Runtime(), "bf16": Runtime(precision="bf16", channels_last=True)}


def designs() -> dict[str, Candidate]:
    best = ROOT / "studies" / "best"
    winner = Candidate(ArchSpec.load(best / "spec.json"),
                       TrainConfig.from_dict(json.loads((best / "metrics.json").read_text())["train"]))
    return {"firekind-6174 (15 ep)": warm_start(15)["firekind-6174"], "winner 15,486 (20 ep)": winner}


def run(job: tuple[str, str, int, str]) -> dict:
    name, precision, seed, root = job
    torch.set_num_threads(1)
    candidate = designs()[name]
    data = load_mnist(root, download=False)
    cfg = TrainConfig.from_dict({**candidate.train.to_dict(), "seed": seed})
    result = train(candidate.spec, cfg, data, runtime=PRECISIONS[precision], test_last=3)
    last = result.history[-3:]
    row = {"design": name, "precision": precision, "seed": seed, "val_score": statistics.fmean(h.val_acc for h in last),
           "test_last3": statistics.fmean(h.test_acc for h in last), "seconds": sum(h.seconds for h in result.history)}
    print(json.dumps(row), flush=True)
    return row


def mean_sd(xs: list[float]) -> str:
    return (f"{100 * statistics.fmean(xs):.3f} ± {100 * statistics.stdev(xs):.3f}" if len(xs) > 1
            else f"{100 * xs[0]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    root = str(args.data_dir or default_data_dir())
    jobs = [(name, p, seed, root)
            for name in reversed(list(designs())) for seed in range(args.seeds) for p in PRECISIONS]
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        rows = pool.map(run, jobs, chunksize=1)
    print("\n| design | precision | n | val score (mean ± sd, %) | test last 3 (mean ± sd, %) | s per run |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in designs():
        for p in PRECISIONS:
            group = [r for r in rows if r["design"] == name and r["precision"] == p]
            print(f"| {name} | {p} | {len(group)} | {mean_sd([r['val_score'] for r in group])} "
                  f"| {mean_sd([r['test_last3'] for r in group])} "
                  f"| {statistics.fmean(r['seconds'] for r in group):.0f} |")


if __name__ == "__main__":
    main()
