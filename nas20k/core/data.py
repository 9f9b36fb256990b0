"""MNIST as tensors held on the training device, batched by index permutation and augmented per batch.

Why in memory: the whole set is 47 MB, so a DataLoader with per-sample Python transforms only adds
overhead; one `affine_grid`/`grid_sample` call augments a whole batch (airbench's way).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from nas20k.base.errors import UserError

ENV_VAR = "NAS20K_DATA_DIR"
MEAN, STD = 0.1307, 0.3081  # pixel mean/std of the 60k training images (inputs are (x/255 - MEAN) / STD)
IMAGE_SIZE = 28
RAW_MD5 = {  # the uncompressed IDX files as torchvision stores them under <root>/MNIST/raw/
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FIX = f"pass --data-dir (or set {ENV_VAR}) to a folder holding MNIST/raw/, or run once with internet to download it"


class DataError(UserError):
    """A data problem the user can fix; the message is one line saying what and how."""


@dataclass(frozen=True)
class DataSplit:
    """The flags that decide which images train and which score (--val-size, --split-seed, --limit); a study
    records them. A study recorded before `split_seed` was a flag was carved with seed 0, its default."""

    val_size: int = 5000
    limit: int | None = None
    split_seed: int = 0


@dataclass
class Split:
    x: torch.Tensor  # (N, 1, 28, 28) float32, normalized
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Mnist:
    train: Split
    val: Split  # carved from the 60k training images; the only split used to choose or prune models
    test: Split  # the 10k test images; reported, never used for selection


def default_data_dir() -> Path:
    """`$NAS20K_DATA_DIR`, else the user's cache dir (where a download lands)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nas20k"


def check_files(root: Path, download: bool = False) -> None:
    """Make sure the four raw files exist (downloading them if allowed) and match MNIST's md5 sums."""
    raw = root / "MNIST" / "raw"
    missing = [name for name in RAW_MD5 if not (raw / name).is_file()]
    if missing and download:
        import torchvision  # only here and to read the files: it takes seconds to import

        try:
            for train in (True, False):
                torchvision.datasets.MNIST(str(root), train=train, download=True)
        except Exception as e:  # urllib/HTTP/OS errors: all mean "could not fetch"
            raise DataError(f"MNIST is missing from {raw} and the download failed ({e.__class__.__name__}); "
                            f"{FIX}") from e
        missing = [name for name in RAW_MD5 if not (raw / name).is_file()]
    if missing:
        raise DataError(f"MNIST file missing: {raw / missing[0]}; {FIX}")
    for name, md5 in RAW_MD5.items():
        if hashlib.md5((raw / name).read_bytes()).hexdigest() != md5:
            raise DataError(f"MNIST file is corrupt (md5 mismatch): {raw / name}; delete it and download again, "
                            f"or {FIX}")


def _split(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> Split:
    x = ((images.float() / 255 - MEAN) / STD).unsqueeze(1)
    return Split(x.to(device), labels.long().to(device))


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be at least 1 image, got {limit}")


def load_mnist(
    root: Path | str | None = None,
    *,
    val_size: int = 5000,
    split_seed: int = 0,
    limit: int | None = None,
    device: torch.device | str = "cpu",
    download: bool = True,
) -> Mnist:
    """Load train/val/test onto `device`. `limit` keeps only the first N train and test images (for smoke tests)."""
    check_limit(limit)
    root = Path(root) if root is not None else default_data_dir()
    check_files(root, download)
    device = torch.device(device)
    import torchvision

    train = torchvision.datasets.MNIST(str(root), train=True, download=False)
    test = torchvision.datasets.MNIST(str(root), train=False, download=False)
    if not 0 < val_size < len(train.targets):
        raise DataError(f"--val-size must be between 1 and {len(train.targets) - 1}, got {val_size}")
    order = torch.randperm(len(train.targets), generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    train_idx = train_idx[:limit] if limit is not None else train_idx
    test_n = len(test.targets) if limit is None else limit
    return Mnist(
        train=_split(train.data[train_idx], train.targets[train_idx], device),
        val=_split(train.data[val_idx], train.targets[val_idx], device),
        test=_split(test.data[:test_n], test.targets[:test_n], device),
    )


def batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Index batches over `n` items: a seeded permutation (full batches only) when a generator is given, else in
    order."""
    if generator is None:
        yield from torch.arange(n).split(batch_size)
        return
    perm = torch.randperm(n, generator=generator, device=generator.device)
    for i in range(0, n - batch_size + 1, batch_size):
        yield perm[i : i + batch_size]


def augment(x: torch.Tensor, degrees: float, translate: float, generator: torch.Generator,
            scale: float = 0.0) -> torch.Tensor:
    """Rotate by U(-degrees, degrees), shift by U(-translate, translate) pixels and (with `scale` > 0) zoom by a
    factor in U(1 - scale, 1 + scale), per sample, in one call. Without `scale` it draws exactly what it drew
    before `scale` existed, so older recipes replay bit for bit."""
    if degrees == 0 and translate == 0 and scale == 0:
        return x
    n = x.shape[0]
    rand = torch.rand(n, 3, generator=generator, device=x.device) * 2 - 1
    angle = rand[:, 0] * math.radians(degrees)
    shift = rand[:, 1:] * (2 * translate / IMAGE_SIZE)  # pixels -> normalized [-1, 1] coordinates
    cos, sin = angle.cos(), angle.sin()
    if scale:  # sampling the grid at 1/zoom enlarges the digit by zoom
        inverse = 1 / (1 + (torch.rand(n, generator=generator, device=x.device) * 2 - 1) * scale)
        cos, sin = cos * inverse, sin * inverse
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = -MEAN / STD  # a black pixel after normalization: what rotation brings in at the corners
    return F.grid_sample(x - background, grid, align_corners=False) + background
