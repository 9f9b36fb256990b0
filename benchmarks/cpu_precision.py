"""The CPU training step in fp32 against the runtime's choice (`--precision auto`), side by side in one run.

img/s of the full training step (batched augmentation, forward, loss, backward, optimizer) for the `seed` preset,
firekind-6174, the committed winner (studies/best/spec.json) and two warm-start designs (nas20k-16424,
nas20k-separable-3680), at 1 thread and at all cores, each the best of `--repeats` timed epochs of
`--batches` batches of 128 after one untimed epoch; in fp32, in the runtime's choice with torch's Dropout, and in
the runtime's choice (its cheap Dropout masks too). Also the share of an epoch that validation and BatchNorm
recalibration take (what evaluating only the epochs the pruner reads saves). The last two lines are geometric-mean
ratios: the cheap masks against torch's, then the runtime's choice against fp32. Where the CPU has no hardware bf16
it says so in one line and exits 0.

    python benchmarks/cpu_precision.py [--batches 60] [--repeats 3] [--data-dir ../shared/data] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from nas20k.core.data import default_data_dir, load_mnist
from nas20k.core.factory import PRESETS, ArchSpec
from nas20k.core.recipe import TrainConfig
from nas20k.core.runtime import Runtime, cpu_has_bf16, resolve
from nas20k.core.train import EVAL_BATCH_CPU, RECALIBRATE_IMAGES, evaluate, recalibrate_bn, train

ROOT = Path(__file__).resolve().parents[1]


def images_per_second(spec: ArchSpec, data, runtime: Runtime, batches: int, repeats: int) -> float:  # noqa: ANN001
    cfg = TrainConfig(epochs=1, batch_size=128, recalibrate_bn=False)
    train(spec, cfg, data, runtime=runtime, eval_epochs=())  # warm-up: allocations, oneDNN kernels
    best = min(train(spec, cfg, data, runtime=runtime, eval_epochs=()).history[0].seconds for _ in range(repeats))
    return batches * 128 / best


def evaluation_seconds(spec: ArchSpec, data) -> float:  # noqa: ANN001
    """Seconds of BatchNorm recalibration (10,000 images) + validation (5,000), in fp32 as the trainer evaluates."""
    model = spec.build().eval()
    start = time.perf_counter()
    recalibrate_bn(model, data.train.x[:RECALIBRATE_IMAGES], EVAL_BATCH_CPU)
    evaluate(model, data.val, EVAL_BATCH_CPU)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="the smallest setting (a test): the seed preset only, 2 batches, 1 repeat")
    args = parser.parse_args()
    if args.smoke:
        args.batches, args.repeats = 2, 1
    if not cpu_has_bf16():
        print("this CPU has no hardware bf16 (AVX512-BF16 or AMX): --precision auto trains in fp32 here, "
              "nothing to compare")
        return
    root = str(args.data_dir or default_data_dir())
    data = load_mnist(root, val_size=5000, limit=args.batches * 128, download=False)
    full = load_mnist(root, val_size=5000, limit=RECALIBRATE_IMAGES, download=False)
    chosen = resolve("cpu", "auto")
    specs = {"seed": PRESETS["seed"], "firekind-6174": PRESETS["firekind-6174"],
             "winner": ArchSpec.load(ROOT / "studies" / "best" / "spec.json"),
             "nas20k-16424": PRESETS["nas20k-16424"], "separable-3680": PRESETS["nas20k-separable-3680"]}
    if args.smoke:
        specs = {"seed": specs["seed"]}
    torch_dropout = replace(chosen, cheap_dropout=False)
    cores = torch.get_num_threads()
    print(f"torch {torch.__version__}, {cores} threads available; fp32 vs {chosen.describe()} (the runtime's choice), "
          "and the choice with torch's Dropout")
    masks, auto_vs_fp32 = [], []
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        for name, spec in specs.items():
            fp32 = images_per_second(spec, data, resolve("cpu", "fp32"), args.batches, args.repeats)
            plain = images_per_second(spec, data, torch_dropout, args.batches, args.repeats)
            auto = images_per_second(spec, data, chosen, args.batches, args.repeats)
            evaluation = evaluation_seconds(spec, full)
            share = evaluation / ((60_000 - 5000) / auto + evaluation)
            masks.append(auto / plain)
            auto_vs_fp32.append(auto / fp32)
            print(f"{threads} thread(s)  {name:>14} {spec.num_params():>6,} params: fp32 {fp32:7,.0f} img/s, "
                  f"{chosen.precision} with torch's Dropout {plain:7,.0f}, the choice {auto:7,.0f}; ratios "
                  f"{auto / plain:.2f} (masks) {auto / fp32:.2f} (vs fp32); "
                  f"validation + recalibration {share:.0%} of an epoch")
    for label, ratios in (("cheap Dropout masks / torch's", masks), (f"{chosen.precision}/fp32", auto_vs_fp32)):
        print(f"ratio {label} (geometric mean of {len(ratios)}): {statistics.geometric_mean(ratios):.2f}")


if __name__ == "__main__":
    main()
