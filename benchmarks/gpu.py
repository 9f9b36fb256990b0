"""The GPU path of nas20k's trainer, eager vs CUDA graphs, side by side in one run (needs CUDA; without it this
prints one line and exits 0).

(1) ms per training step of the seed net at batch 128 and 512: epoch 2 of `nas20k.core.train.train` over the 55,000
    training images, divided by its steps (the epoch also holds one 5,000-image validation pass, about a millisecond);
(2) one seed trial with the default recipe (20 epochs, SGD + OneCycle, batch 128): wall seconds and val accuracy;
(3) aggregate img/s of 1, 4 and 8 spawned worker processes training the firekind-6174 candidate (its warm-start
    recipe, batch 128) with graphs at the same time, as a search's workers share one GPU: images of the epochs after
    the first, over the time from the first worker finishing its first epoch to the last worker finishing (this
    depends on CUDA MPS: without it the GPU time-slices between processes; the first line says which);
(4) the same with 4 and 8 worker threads of one process, each on its own CUDA stream (what a search runs without
    MPS), against (3)'s one worker;
then the ratios, last.

    python benchmarks/gpu.py [--data-dir ../shared/data] [--quick] [--smoke] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import threading
import time
from dataclasses import replace

import torch

from nas20k.core.data import Mnist, default_data_dir, load_mnist
from nas20k.core.factory import PRESETS
from nas20k.core.runtime import Runtime, mps_running, own_stream
from nas20k.core.space import warm_start
from nas20k.core.train import TrainConfig, train

WORKERS = (1, 4, 8)
WORKER_IMAGES = 200 * 128  # per worker: 200 steps of 128 per epoch


def step_ms(data: Mnist, batch_size: int, graphs: bool) -> float:
    """ms per step in epoch 2 (epoch 1 pays for cuDNN set-up and the graph capture)."""
    cfg = TrainConfig(epochs=2, batch_size=batch_size)
    result = train(PRESETS["seed"], cfg, data, runtime=Runtime(device="cuda", cuda_graphs=graphs))
    return 1000 * result.history[1].seconds / (len(data.train) // batch_size)


def trial(data: Mnist, epochs: int, graphs: bool) -> tuple[float, float]:
    """(wall seconds, last val accuracy) of one seed trial."""
    start = time.perf_counter()
    result = train(PRESETS["seed"], TrainConfig(epochs=epochs), data,
                   runtime=Runtime(device="cuda", cuda_graphs=graphs))
    return time.perf_counter() - start, result.history[-1].val_acc


def _timed(data: Mnist, epochs: int, barrier: mp.Barrier | threading.Barrier) -> tuple[float, float, int]:
    """Train firekind-6174 with graphs on this thread's own stream, as a search's worker does: (end of epoch 1, end
    of the last epoch, images in between)."""
    candidate = warm_start(epochs)["firekind-6174"]
    ends: list[float] = []
    barrier.wait(timeout=600)  # all workers train at the same time, as in a search
    with own_stream("cuda:0"):
        train(candidate.spec, replace(candidate.train, epochs=epochs), data, lambda _: ends.append(time.time()),
              runtime=Runtime(device="cuda:0"))
    return ends[0], ends[-1], (epochs - 1) * WORKER_IMAGES


def _worker(root: str, epochs: int, barrier: mp.Barrier, results: mp.Queue) -> None:
    results.put(_timed(_worker_data(root), epochs, barrier))


def _worker_data(root: str) -> Mnist:
    return load_mnist(root, val_size=500, limit=WORKER_IMAGES, device="cuda", download=False)


def _rate(results: list[tuple[float, float, int]]) -> float:
    start, end = min(r[0] for r in results), max(r[1] for r in results)
    return sum(r[2] for r in results) / (end - start)


def threaded(root: str, workers: int, epochs: int) -> float:
    """Aggregate img/s of `workers` threads of this process training at once, each on its own CUDA stream (what a
    search without MPS runs: `settings.worker_groups`)."""
    data, barrier, results = _worker_data(root), threading.Barrier(workers), []
    threads = [threading.Thread(target=lambda: results.append(_timed(data, epochs, barrier))) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(results) < workers:
        raise SystemExit("a worker thread failed (its traceback is above)")
    return _rate(results)


def concurrent(root: str, workers: int, epochs: int) -> float:
    """Aggregate img/s of `workers` processes training at once."""
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    barrier, done = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(root, epochs, barrier, done)) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        results = [done.get(timeout=900) for _ in procs]
    except queue.Empty:
        raise SystemExit(f"a worker failed or hung (exit codes {[p.exitcode for p in procs]})") from None
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
    return _rate(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--quick", action="store_true",
                        help="a 4-epoch trial and 3 worker epochs instead of 20 and 6 "
                             "(the full run took 116 s on an H200)")
    parser.add_argument("--smoke", action="store_true",
                        help="the smallest setting (a test): a 1-epoch trial, 2 worker epochs, 1 and 2 workers")
    parser.add_argument("--out", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: benchmarks/gpu.py measures the GPU path; nothing to do")
        return
    root = str(args.data_dir or default_data_dir())
    trial_epochs, worker_epochs = (1, 2) if args.smoke else (4, 3) if args.quick else (20, 6)
    workers = (1, 2) if args.smoke else WORKERS
    results: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "quick": args.quick,
                     "mps": mps_running()}
    print(f"{results['device']}, torch {torch.__version__}, seed net {PRESETS['seed'].num_params():,} params, "
          f"CUDA MPS {'running' if results['mps'] else 'not running (the workers in (3) time-slice the GPU)'}",
          flush=True)

    data = load_mnist(root, device="cuda", download=False)
    print(f"(1) ms per step, epoch 2 over {len(data.train):,} images:", flush=True)
    for batch in (128, 512):
        eager, graphed = step_ms(data, batch, graphs=False), step_ms(data, batch, graphs=True)
        results[f"step_ms_{batch}"] = {"eager": eager, "graphed": graphed}
        print(f"    batch {batch}: eager {eager:.3f} ms, graphed {graphed:.3f} ms", flush=True)

    for graphs in (False, True):
        seconds, val = trial(data, trial_epochs, graphs)
        mode = "graphed" if graphs else "eager"
        results[f"trial_{mode}"] = {"epochs": trial_epochs, "seconds": seconds, "val_acc": val}
        print(f"(2) {trial_epochs}-epoch seed trial, {mode}: {seconds:.1f} s, val {val:.2%}", flush=True)
    del data
    torch.cuda.empty_cache()

    steps = (worker_epochs - 1) * WORKER_IMAGES // 128
    for n in workers:
        rate = concurrent(root, n, worker_epochs)
        results[f"workers_{n}_img_s"] = rate
        print(f"(3) {n} worker(s), firekind-6174 graphed, {steps} timed steps of 128 each: {rate:,.0f} img/s",
              flush=True)
    for n in workers[1:]:
        rate = threaded(root, n, worker_epochs)
        results[f"threads_{n}_img_s"] = rate
        print(f"(4) {n} worker threads in one process, own CUDA streams, the same runs: {rate:,.0f} img/s", flush=True)

    ratios = {
        "step_speedup_128": results["step_ms_128"]["eager"] / results["step_ms_128"]["graphed"],
        "step_speedup_512": results["step_ms_512"]["eager"] / results["step_ms_512"]["graphed"],
        "trial_speedup": results["trial_eager"]["seconds"] / results["trial_graphed"]["seconds"],
        **{f"workers_{n}_vs_1": results[f"workers_{n}_img_s"] / results["workers_1_img_s"] for n in workers[1:]},
        **{f"threads_{n}_vs_1": results[f"threads_{n}_img_s"] / results["workers_1_img_s"] for n in workers[1:]},
    }
    results["ratios"] = ratios
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
