"""What `nas20k search --jobs N` buys on this machine, measured side by side in one run.

Trains the same candidate for the same number of batches (a) in one process using every core's
threads (`--jobs 1`), then (b) in N processes with cores/N threads each, all at once (`--jobs N`,
as the search runs its workers). Prints img/s for each and the ratio b/a as the last line.

    python benchmarks/jobs.py [--jobs 2] [--batches 150] [--preset small] [--data-dir ../shared/data] [--smoke]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import torch

from nas20k.core.data import default_data_dir, load_mnist
from nas20k.core.factory import PRESETS
from nas20k.core.train import TrainConfig, train


def run(root: str, preset: str, batches: int, threads: int, start: mp.Barrier | None = None) -> tuple[float, float]:
    """Train one epoch of `batches` batches of 128; returns (start, end) wall-clock times of the training."""
    torch.set_num_threads(threads)
    data = load_mnist(root, val_size=500, limit=batches * 128, download=False)
    if start is not None:
        start.wait()  # all workers train at the same time, as in a search
    t0 = time.time()
    train(PRESETS[preset], TrainConfig(epochs=1, batch_size=128), data)
    return t0, time.time()


def _child(args: tuple, queue: mp.Queue) -> None:
    queue.put(run(*args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--batches", type=int, default=150, help="batches of 128 per process")
    parser.add_argument("--preset", default="small", choices=list(PRESETS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--smoke", action="store_true", help="the smallest setting (a test): 4 batches")
    args = parser.parse_args()
    if args.smoke:
        args.batches = 4
    root = str(args.data_dir or default_data_dir())
    cores = len(os.sched_getaffinity(0))
    images = args.batches * 128
    print(f"{cores} cores, preset {args.preset} ({PRESETS[args.preset].num_params():,} params), "
          f"{args.batches} batches of 128 per process")

    t0, t1 = run(root, args.preset, args.batches, cores)
    a = images / (t1 - t0)
    print(f"(a) --jobs 1: 1 process x {cores} threads: {a:,.0f} img/s")

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(args.jobs), ctx.Queue()
    threads = max(1, cores // args.jobs)
    procs = [ctx.Process(target=_child, args=((root, args.preset, args.batches, threads, barrier), queue))
             for _ in range(args.jobs)]
    for p in procs:
        p.start()
    spans = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    b = images * args.jobs / (max(end for _, end in spans) - min(start for start, _ in spans))
    print(f"(b) --jobs {args.jobs}: {args.jobs} processes x {threads} thread(s): {b:,.0f} img/s together")
    print(f"ratio b/a: {b / a:.2f}")


if __name__ == "__main__":
    main()
