"""Runs of a few designs under two or more variants of how they train, on the same seeds, side by side: the shared
machinery of benchmarks/precision_parity.py and benchmarks/small_recipes.py. Runs go two at a time, one thread each
(what a 2-core search does), on the full split (55k train, 5k val); each prints one JSON row, then a table gives mean
± sd of the val score and of test accuracy (both means of the last 3 epochs) per design and variant. `smoke`: the
same code path at its smallest setting (the scripts' --smoke)."""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
from collections.abc import Callable
from dataclasses import replace

import torch

from nas20k.core.data import load_mnist
from nas20k.core.runtime import Runtime
from nas20k.core.space import Candidate
from nas20k.core.train import train

Variant = Callable[[Candidate], tuple[Candidate, Runtime]]  # how a design trains under this variant
SMOKE_IMAGES = 512  # --smoke: training (and test) images of a run, which trains 1 epoch


def run(job: tuple[str, str, int, Candidate, Runtime, str, int, int | None]) -> dict:
    design, variant, seed, candidate, runtime, root, val_size, limit = job
    torch.set_num_threads(1)
    data = load_mnist(root, download=False, val_size=val_size, limit=limit)
    result = train(candidate.spec, replace(candidate.train, seed=seed), data, runtime=runtime, test_last=3)
    last = result.history[-3:]
    row = {"design": design, "variant": variant, "seed": seed, "val_score": statistics.fmean(h.val_acc for h in last),
           "test_last3": statistics.fmean(h.test_acc for h in last), "seconds": sum(h.seconds for h in result.history)}
    print(json.dumps(row), flush=True)
    return row


def mean_sd(xs: list[float]) -> str:
    return (f"{100 * statistics.fmean(xs):.3f} ± {100 * statistics.stdev(xs):.3f}" if len(xs) > 1
            else f"{100 * xs[0]:.3f}")


def smoke_run(candidate: Candidate, runtime: Runtime) -> tuple[Candidate, Runtime]:
    """A run of `compare(smoke=True)`: 1 epoch (of `SMOKE_IMAGES` images)."""
    return replace(candidate, train=replace(candidate.train, epochs=1)), runtime


def compare(designs: dict[str, Candidate], variants: dict[str, Variant], seeds: int, jobs: int, root: str,
            val_size: int = 5000, smoke: bool = False) -> None:
    """Train every design under every variant on seeds 0..seeds-1, then print the table. `val_size`: the images
    carved from the 60k for validation (the rest train); test is the same 10,000 either way. `smoke`: only the
    first design under the first two variants, seed 0, one process, 1 epoch of `SMOKE_IMAGES` training images,
    validated and tested on as many."""
    if smoke:
        designs, variants, seeds, jobs = dict(list(designs.items())[:1]), dict(list(variants.items())[:2]), 1, 1
        val_size = min(val_size, SMOKE_IMAGES)
    limit = SMOKE_IMAGES if smoke else None
    work = [(name, v, seed, *(smoke_run(*variants[v](c)) if smoke else variants[v](c)), root, val_size, limit)
            for name, c in designs.items() for seed in range(seeds) for v in variants]
    with mp.get_context("spawn").Pool(jobs) as pool:
        rows = pool.map(run, work, chunksize=1)
    print("\n| design | variant | n | val score (mean ± sd, %) | test last 3 (mean ± sd, %) | s per run |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in designs:
        for v in variants:
            group = [r for r in rows if r["design"] == name and r["variant"] == v]
            print(f"| {name} | {v} | {len(group)} | {mean_sd([r['val_score'] for r in group])} "
                  f"| {mean_sd([r['test_last3'] for r in group])} "
                  f"| {statistics.fmean(r['seconds'] for r in group):.0f} |")
