"""Training N seed replicates as one fused model (nas20k.fused, HFTA) against N separate models, one after another.

Same work on both sides: each replicate has its own seed, batch order and augmentation draws, batch 128, SGD of the
default recipe, train mode (Dropout on). (a) separate: replicate 1's batches, then 2's, then 3's, each a plain model.
(b) fused: at every step the N replicates' augmented batches are concatenated on the channel axis and take one
forward, one `fused_loss`, one backward and one optimizer step. img/s counts every replicate's images. 1 thread,
presets `firekind-6174` and `seed`; each side the best of `--repeats` timed runs of `--batches` batches per replicate,
the two sides alternating, after one untimed short run of each. The last line is the geometric-mean ratio b/a.
Eager on both sides; `--device cuda` runs it on a GPU (there the search's own step is a CUDA graph, so this says
whether fusing pays before graphs; not yet measured).

    python benchmarks/fused.py [--replicates 3] [--batches 40] [--repeats 3] [--device cpu] [--data-dir ../shared/data]
                               [--smoke]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from fused_nets import build_fused, fuse_inputs, fuse_states, fused_loss

from nas20k.core.data import Split, augment, batches, default_data_dir, load_mnist
from nas20k.core.factory import PRESETS, ArchSpec
from nas20k.core.recipe import TrainConfig
from nas20k.core.train import _optimizer

CFG = TrainConfig(batch_size=128)


def _done(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def separate(spec: ArchSpec, train: Split, n: int, steps: int) -> float:
    """Seconds to train n plain models for `steps` batches each, one model after another."""
    start, device = time.perf_counter(), train.x.device
    for seed in range(n):
        torch.manual_seed(seed)
        gen = torch.Generator(device=device).manual_seed(seed)
        model = spec.build().to(device).train()
        opt = _optimizer(model, CFG)
        for idx in list(batches(len(train), CFG.batch_size, gen))[:steps]:
            x = augment(train.x[idx], CFG.rotate, CFG.translate, gen, CFG.scale)
            loss = F.cross_entropy(model(x), train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return _done(device) - start


def fused(spec: ArchSpec, train: Split, n: int, steps: int) -> float:
    """Seconds to train the same n replicates (same seeds, batch orders, augmentation) as one fused model."""
    start, device = time.perf_counter(), train.x.device
    states, gens = [], [torch.Generator(device=device).manual_seed(seed) for seed in range(n)]
    for seed in range(n):
        torch.manual_seed(seed)
        states.append(spec.build().state_dict())
    model = build_fused(spec, n).to(device).train()
    model.load_state_dict(fuse_states(spec, states))
    opt = _optimizer(model, CFG)
    orders = [list(batches(len(train), CFG.batch_size, gen))[:steps] for gen in gens]
    for step_idx in zip(*orders, strict=True):
        xs = [augment(train.x[idx], CFG.rotate, CFG.translate, gen, CFG.scale)
              for idx, gen in zip(step_idx, gens, strict=True)]
        loss = fused_loss(model(fuse_inputs(xs)), torch.stack([train.y[idx] for idx in step_idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return _done(device) - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicates", type=int, default=3)
    parser.add_argument("--batches", type=int, default=40, help="batches of 128 per replicate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="the smallest setting (a test): 2 replicates x 3 batches, 1 repeat")
    args = parser.parse_args()
    if args.smoke:
        args.replicates, args.batches, args.repeats = 2, 3, 1
    torch.set_num_threads(1)
    train = load_mnist(str(args.data_dir or default_data_dir()), val_size=500, limit=args.batches * CFG.batch_size,
                       download=False, device=args.device).train
    n, images = args.replicates, args.replicates * args.batches * CFG.batch_size
    print(f"torch {torch.__version__}, {args.device}, 1 thread; {n} replicates x {args.batches} batches of "
          f"{CFG.batch_size} ({images:,} images per side), best of {args.repeats}")
    ratios = []
    for name in ("firekind-6174", "seed"):
        spec = PRESETS[name]
        separate(spec, train, n, 3), fused(spec, train, n, 3)  # warm-up: allocations, oneDNN kernels
        a, b = math.inf, math.inf
        for _ in range(args.repeats):  # alternating, so load from elsewhere on the machine hits both sides alike
            a = min(a, separate(spec, train, n, args.batches))
            b = min(b, fused(spec, train, n, args.batches))
        ratios.append(a / b)
        print(f"{name:>13} {spec.num_params():>6,} params: (a) {n} separate {images / a:7,.0f} img/s, "
              f"(b) fused {images / b:7,.0f} img/s, ratio b/a {a / b:.2f}")
    print(f"ratio fused/separate (geometric mean of {len(ratios)}): {statistics.geometric_mean(ratios):.2f}")


if __name__ == "__main__":
    main()
