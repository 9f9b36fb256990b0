"""What one evaluated epoch costs on the CPU at batches of 1,000 images (before) and of `EVAL_BATCH_CPU`, side by side.

An evaluated epoch of a search trial or confirmation run is BatchNorm recalibration on 10,000 clean training images,
then validation on 5,000 (and, in a run's last 3 epochs, test on 10,000), all in fp32, with the model in the
memory layout it trained in (channels_last under the runtime's bf16 choice). Per net: the best of `--repeats`
timings at each batch size, after one untimed pass, on 1 thread (as a search worker runs). The committed winner
runs with its trained weights (studies/best/model.pt), so its val accuracy at both batch sizes says what the change
does to a score: recalibration averages the statistics of 10 or 20 batches of the same images, and evaluation is
per image. The others are freshly initialised (the time does not depend on the weights). The last line is the
geometric-mean ratio of the seconds.

    python benchmarks/evaluation.py [--repeats 3] [--data-dir ../shared/data] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from nas20k.core.data import Mnist, default_data_dir, load_mnist
from nas20k.core.factory import PRESETS, ArchSpec
from nas20k.core.runtime import resolve
from nas20k.core.train import EVAL_BATCH_CPU, RECALIBRATE_IMAGES, evaluate, recalibrate_bn

ROOT = Path(__file__).resolve().parents[1]
BEFORE = 1000


def evaluated_epoch(model: nn.Module, data: Mnist, batch: int) -> tuple[float, float]:
    """Seconds of recalibration + validation + test at `batch`, and the val accuracy."""
    start = time.perf_counter()
    recalibrate_bn(model, data.train.x[:RECALIBRATE_IMAGES], batch)
    val = evaluate(model, data.val, batch)
    evaluate(model, data.test, batch)
    return time.perf_counter() - start, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="the smallest setting (a test): the winner only, 1 repeat, 512 images per split")
    args = parser.parse_args()
    torch.set_num_threads(1)
    size, limit = (512, 512) if args.smoke else (5000, RECALIBRATE_IMAGES)
    data = load_mnist(str(args.data_dir or default_data_dir()), val_size=size, limit=limit, download=False)
    runtime = resolve("cpu", "auto")
    layout = torch.channels_last if runtime.channels_last else torch.contiguous_format
    specs = {"seed": PRESETS["seed"], "firekind-6174": PRESETS["firekind-6174"],
             "winner": ArchSpec.load(ROOT / "studies" / "best" / "spec.json"),
             "nas20k-14568": PRESETS["nas20k-14568"], "nas20k-16424": PRESETS["nas20k-16424"],
             "separable-3680": PRESETS["nas20k-separable-3680"]}
    if args.smoke:
        specs, args.repeats = {"winner": specs["winner"]}, 1
    print(f"torch {torch.__version__}, 1 thread, {runtime.describe()} layout; an evaluated epoch (recalibration on "
          f"{min(RECALIBRATE_IMAGES, len(data.train)):,} images, val {len(data.val):,}, test {len(data.test):,}) at "
          f"batches of {BEFORE:,} and {EVAL_BATCH_CPU:,}")
    ratios = []
    for name, spec in specs.items():
        torch.manual_seed(0)
        model = spec.build()
        if name == "winner":
            model.load_state_dict(torch.load(ROOT / "studies" / "best" / "model.pt", weights_only=True))
        model = model.to(memory_format=layout)
        seconds, vals = {}, {}
        for batch in (BEFORE, EVAL_BATCH_CPU):
            evaluated_epoch(model, data, batch)  # warm-up: allocations, oneDNN kernels
            runs = [evaluated_epoch(model, data, batch) for _ in range(args.repeats)]
            seconds[batch], vals[batch] = min(s for s, _ in runs), runs[-1][1]
        ratios.append(seconds[BEFORE] / seconds[EVAL_BATCH_CPU])
        print(f"{name:>15} {spec.num_params():>6,} params: {seconds[BEFORE]:5.2f} s at {BEFORE:,}, "
              f"{seconds[EVAL_BATCH_CPU]:5.2f} s at {EVAL_BATCH_CPU:,} ({ratios[-1]:.2f}x)"
              + (f"; trained: val {vals[BEFORE]:.2%} at {BEFORE:,}, {vals[EVAL_BATCH_CPU]:.2%} at {EVAL_BATCH_CPU:,}"
                 if name == "winner" else ""))
    print(f"ratio batch {BEFORE:,} / batch {EVAL_BATCH_CPU:,} seconds (geometric mean of {len(ratios)}): "
          f"{statistics.geometric_mean(ratios):.2f}")


if __name__ == "__main__":
    main()
