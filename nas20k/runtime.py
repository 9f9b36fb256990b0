"""How a run executes — device, torch.compile, CUDA graphs, threads — kept apart from the recipe a candidate
carries, so a recipe found on a laptop's CPU retrains the same way on a GPU."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from nas20k.errors import UserError


class DeviceError(UserError):
    """A --device value that names no usable device; one readable line."""


@dataclass(frozen=True)
class Runtime:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: bool = False  # torch.compile the model: tens of seconds per architecture, pays off only on long runs
    cuda_graphs: bool = True  # on CUDA: capture the training step once and replay it (ignored on CPU)
    threads: int | None = None  # torch CPU threads (None: torch's default)

    def torch_device(self) -> torch.device:
        return pick_device(self.device)


def pick_device(name: str = "auto") -> torch.device:
    """`auto` is `cuda` when CUDA is available, else the CPU. `cuda` (no index: a search spreads its workers over
    the GPUs, a single run uses the current one, cuda:0) needs CUDA; `cuda:N` must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not m:
        raise DeviceError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu")
    if m.group(1) is None:
        return torch.device("cuda")
    index = int(m.group(1))
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


def mps_running() -> bool:
    """Whether an NVIDIA MPS control daemon looks up (its control pipe exists). Why it matters: without MPS the GPU
    time-slices between processes, so a search's workers take turns instead of sharing it. Measured on an H200 with
    CUDA graphs (benchmarks/gpu.py, studies/reference/gpu-h200-*): 8 workers trained 0.89x the images of one
    without MPS, 2.5x with it."""
    return (Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps") / "control").exists()
