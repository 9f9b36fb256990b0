"""How a run executes — device, precision, torch.compile, CUDA graphs — kept apart from the recipe a candidate
carries, so a recipe found on a laptop's CPU retrains the same way on a GPU. torch is imported where a device is
resolved, not when the CLI starts."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nas20k.base.errors import UserError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16")


class DeviceError(UserError):
    """A --device or --precision value that names nothing usable; one readable line."""


@dataclass(frozen=True)
class Runtime:
    device: str = "cpu"  # cpu | cuda:N, as resolved by `pick_device`
    precision: str = "fp32"  # fp32 | bf16 (autocast for the training step; weights, optimizer and BatchNorm stay fp32)
    channels_last: bool = False  # the model's convs in NHWC memory order (with bf16 on the CPU: oneDNN's fast path)
    compile: bool = False  # torch.compile the model: tens of seconds per architecture, pays off only on long runs
    cuda_graphs: bool = True  # on CUDA: capture the training step once and replay it (ignored on CPU)
    cheap_dropout: bool = False  # Dropout masks from 16-bit lanes of 64-bit draws (dropout.py): 3x cheaper on a CPU

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """The context the training step's forward pass runs in: bf16 autocast, or nothing. `cache_enabled=False`
        because a CUDA graph must not capture autocast's weight cache (it is cleared between steps)."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=False)

    def describe(self) -> str:
        return (f"{self.device} {self.precision}{' channels_last' if self.channels_last else ''}"
                f"{' cheap_dropout' if self.cheap_dropout else ''}")


_thread = threading.local()


@contextlib.contextmanager
def own_stream(device: str) -> Iterator[None]:
    """On CUDA, run the calling thread's work on its own stream, so the trials that share a worker process (threads)
    overlap their kernels on one GPU instead of queueing on the default stream; it waits for what the process put
    on the device before (the data) and is drained on exit (the weights are read next). Elsewhere nothing."""
    if not device.startswith("cuda"):
        yield
        return
    import torch

    stream = getattr(_thread, "stream", None)
    if stream is None or stream.device != torch.device(device):
        stream = _thread.stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.default_stream(device))
    with torch.cuda.stream(stream):
        yield
    stream.synchronize()


def pick_device(name: str = "auto") -> torch.device:
    """`auto` is `cuda` when CUDA is available, else the CPU. `cuda` (no index: a search spreads its workers over
    the GPUs, a single run uses the current one, cuda:0) needs CUDA; `cuda:N` must exist."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not m:
        raise DeviceError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); "
                          "use --device cpu")
    if m.group(1) is None:
        return torch.device("cuda")
    index = int(m.group(1))
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AVX512-BF16 or AMX), as torch reports it. Elsewhere
    bf16 is emulated and slower than fp32, so `auto` keeps fp32 there."""
    import torch

    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def pick_precision(name: str, device: torch.device) -> str:
    """`auto`: bf16 on a CPU with hardware bf16 (benchmarks/cpu_precision.py measures it; accuracy parity in
    docs/results.md), fp32 everywhere else, CUDA included until it is measured there."""
    if name not in PRECISIONS:
        raise DeviceError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"
    return name


def resolve(device: str = "auto", precision: str = "auto", *, compile: bool = False,
            cuda_graphs: bool = True) -> Runtime:
    """The runtime a command's flags ask for, with `auto` decided for this machine. channels_last and the cheap
    Dropout masks go with bf16 on the CPU: oneDNN's bf16 convolutions want NHWC (in fp32 it measured no faster,
    0.98-1.06x), and fp32 stays today's path, bit for bit (CUDA draws its masks in one fused kernel anyway)."""
    dev = pick_device(device)
    prec = pick_precision(precision, dev)
    fast_cpu = prec == "bf16" and dev.type == "cpu"
    return Runtime(device=str(dev), precision=prec, channels_last=fast_cpu, compile=compile,
                   cuda_graphs=cuda_graphs, cheap_dropout=fast_cpu)


def mps_running() -> bool:
    """Whether an NVIDIA MPS control daemon looks up (its control pipe exists): without it the GPU time-slices
    between processes, so a search's workers take turns instead of sharing it."""
    return (Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps") / "control").exists()
