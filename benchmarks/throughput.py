"""Training throughput, side by side in one run: the seed notebook's pipeline vs nas20k's trainer.

(a) the seed's way: torchvision MNIST + per-sample RandomRotation/ToTensor/Normalize in a DataLoader
    with 2 workers, SGD(0.01, momentum 0.9), batch 128;
(b) nas20k's trainer: the whole set as tensors on the device, one batched affine_grid/grid_sample
    augmentation per batch, the same seed spec, batch size and number of batches.
Prints img/s for each, the seed model's MACs per image, and the ratio b/a as the last line.

    python benchmarks/throughput.py [--batches 200] [--data-dir ../shared/data] [--compile] [--smoke]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

from nas20k.core.data import MEAN, STD, default_data_dir, load_mnist
from nas20k.core.factory import PRESETS
from nas20k.core.runtime import Runtime
from nas20k.core.train import TrainConfig, train

WARMUP = 10  # batches not timed in (a): worker start-up and first-touch allocations


def seed_pipeline(root: str, batches: int, device: torch.device) -> float:
    """img/s of the seed notebook's loop over `batches` batches of 128."""
    tf = transforms.Compose([transforms.RandomRotation((-15.0, 15.0), fill=(0,)), transforms.ToTensor(),
                             transforms.Normalize((MEAN,), (STD,))])
    loader = torch.utils.data.DataLoader(datasets.MNIST(root, train=True, download=False, transform=tf), batch_size=128,
                                         shuffle=True, num_workers=2, pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    model = PRESETS["seed"].build().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    seen, start = 0, None
    for i, (x, y) in enumerate(loader):
        if i == WARMUP:
            _sync(device)
            start, seen = time.perf_counter(), 0
        if i == WARMUP + batches:
            break
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        seen += len(y)
    _sync(device)
    return seen / (time.perf_counter() - start)


def nas20k_trainer(root: str, batches: int, device: torch.device, compile: bool) -> float:
    """img/s of nas20k.core.train over one epoch of exactly `batches` batches of 128 (its per-epoch timing,
    which includes a 500-image validation pass and, with --compile, the compile warm-up)."""
    data = load_mnist(root, val_size=500, limit=batches * 128, device=device, download=False)
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.01, schedule="none", nesterov=False, weight_decay=0, rotate=15,
                      translate=0)
    result = train(PRESETS["seed"], cfg, data, runtime=Runtime(device=str(device), compile=compile))
    return batches * 128 / result.history[0].seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200, help="timed batches of 128 per pipeline")
    parser.add_argument("--data-dir", default=None, help="MNIST root (default: $NAS20K_DATA_DIR or the cache dir)")
    parser.add_argument("--compile", action="store_true", help="also time nas20k's trainer with torch.compile")
    parser.add_argument("--smoke", action="store_true", help="the smallest setting (a test): 4 batches")
    args = parser.parse_args()
    if args.smoke:
        args.batches = 4
    root = str(args.data_dir or default_data_dir())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = PRESETS["seed"]
    print(f"device {device} ({torch.get_num_threads()} threads), seed spec: {spec.num_params():,} params, "
          f"{spec.macs():,} MACs/image forward")
    a = seed_pipeline(root, args.batches, device)
    print(f"(a) seed DataLoader pipeline: {a:,.0f} img/s")
    b = nas20k_trainer(root, args.batches, device, compile=False)
    print(f"(b) nas20k trainer:           {b:,.0f} img/s")
    if args.compile:
        c = nas20k_trainer(root, args.batches, device, compile=True)
        print(f"(b) with torch.compile:       {c:,.0f} img/s (ratio {c / a:.2f}, compile warm-up included)")
    print(f"ratio b/a: {b / a:.2f}")


if __name__ == "__main__":
    main()
