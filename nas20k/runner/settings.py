"""What a search or confirm run executes with, resolved once: device, precision, workers and threads per worker.

`SearchSettings` holds the flags; its `execution` turns `auto` into this machine's choice, once, so every worker,
header line and study attribute reads the same answer.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from nas20k.base.errors import UserError
from nas20k.base.mission import Budget, Goal
from nas20k.core.pruners import DEFAULT_PRUNER, PRUNERS
from nas20k.core.runtime import Runtime, pick_device, resolve

if TYPE_CHECKING:  # torch, the data and the storage load when a run needs them: a bad flag is refused at once
    import torch

    from nas20k.core.data import DataSplit

GPU_WORKERS = 8  # per GPU: the host work of one trial (sampling, capture, evaluation) leaves it idle between steps


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_jobs(device: torch.device) -> int:
    """One one-thread worker per CPU core (small nets scale better across processes than across threads,
    benchmarks/jobs.py); GPU_WORKERS per GPU on CUDA."""
    import torch

    if device.type != "cuda":
        return cpu_count()
    # cuda:N pins all to one GPU
    return GPU_WORKERS if device.index is not None else GPU_WORKERS * torch.cuda.device_count()


def worker_groups(workers: int, gpus: int, mps: bool, per_process: int | None = None) -> list[list[int]]:
    """Which workers (concurrent trials) share a process, as lists of worker indices. One per process on the CPU
    (each its own cores) and under NVIDIA MPS (processes share the GPU); without MPS, processes on one GPU take
    turns on it, so each GPU gets one process whose workers are threads, each on its own CUDA stream
    (`runtime.own_stream`). `per_process` overrides the choice (tests, benchmarks)."""
    if per_process is None:
        per_process = 1 if gpus == 0 or mps else math.ceil(workers / min(workers, gpus))
    return [list(range(i, min(i + per_process, workers))) for i in range(0, workers, per_process)]


def runtime_line(d: dict) -> str:
    """A runtime as `SearchSettings.describe` records it, in one line: the header of search and confirm, and the
    "ran on" lines of `best` (read from the study, where a record older than a key lacks it)."""
    workers, threads = d.get("workers", 1), d.get("threads")
    processes = d.get("processes", workers)
    per_worker = f" x {threads} thread{'s' * (threads != 1)}" if threads else ""
    shared = f" in {processes} process{'es' * (processes != 1)} (one CUDA stream each)" if processes < workers else ""
    layout = ", channels_last" * bool(d.get("channels_last")) + ", cheap dropout masks" * bool(d.get("cheap_dropout"))
    device = f" ({d['device']})" if "device" in d else ""
    return (f"{d.get('device_name', 'unknown device')}{device}, {d.get('precision', 'fp32')}{layout}, "
            f"{workers} worker{'s' * (workers != 1)}{per_worker}{shared}, torch {d.get('torch', '?')}")


def device_name(device: torch.device) -> str:
    """The GPU's or the CPU's model name, for the study's record of how it ran."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Execution:
    """How a search or confirm run executes: resolved once per command (`SearchSettings.execution`)."""

    runtime: Runtime  # worker 0's; with --device cuda (no index) the others differ only in their GPU
    workers: int
    groups: list[list[int]]  # the worker indices each process runs (as threads when more than one)
    threads: int | None  # torch threads per worker on the CPU (the cores shared out); None on a GPU
    gpus: int  # GPUs the processes are dealt out over (--device cuda); 0: every worker on `runtime.device`
    device_name: str
    torch: str

    @property
    def command_connections(self) -> int:
        """Server connections the command's own storage needs: 2 when its process trains too (one group: the first
        worker trains on it, with its heartbeat), else 1 (it plans and polls; its workers are other processes)."""
        return 2 if len(self.groups) == 1 else 1

    def runtime_of(self, index: int) -> Runtime:
        """Worker `index`'s runtime: the threads of one process share its GPU."""
        if not self.gpus:
            return self.runtime
        group = next(g for g, members in enumerate(self.groups) if index in members)
        return replace(self.runtime, device=f"cuda:{group % self.gpus}")

    def describe(self) -> dict:
        """As the study records it (`StudyMeta.runtime`) and `runtime_line` reads it."""
        rt, kind = self.runtime, self.runtime.device.split(":")[0]
        return {"device": kind, "device_name": self.device_name, "precision": rt.precision,
                "channels_last": rt.channels_last, "cheap_dropout": rt.cheap_dropout,
                "cuda_graphs": rt.cuda_graphs and kind == "cuda", "workers": self.workers,
                "processes": len(self.groups), "threads": self.threads, "torch": self.torch}

    def header(self) -> str:
        """`describe()` in one line, for the first lines of search and confirm."""
        return runtime_line(self.describe())


@dataclass
class SearchSettings:
    study_name: str = "nas20k"
    storage: str | None = None  # an Optuna RDB URL; default sqlite:///studies/<study_name>.db
    artifacts: str | None = None  # where trial weights go; default: next to the SQLite file
    trials: int = 50
    budget: Budget = field(default_factory=Budget)
    goal: Goal = field(default_factory=Goal)
    pruner: str = DEFAULT_PRUNER
    jobs: int | None = None  # None: default_jobs(device)
    trials_per_process: int | None = None  # None: the runtime's choice (`worker_groups`)
    seed: int = 0
    warm_start: bool = True
    starts: tuple[str, ...] = ()  # zoo designs to queue instead of the lead and its followers (`--start`)
    local_search: bool = True  # every MOVE_EVERY-th trained trial a neighbour of a top design (`runner.local`)
    device: str = "auto"
    precision: str = "auto"
    cuda_graphs: bool = True
    data_dir: str | None = None
    download: bool = True
    val_size: int = 5000
    split_seed: int = 0  # which 5,000 images are val: a design chosen on one split is checked on another
    limit: int | None = None  # train/test on the first N images only (smoke tests)
    heartbeat: int = 30  # seconds; a worker silent for 2x this is declared dead and its trial retried
    storage_patience: float = 120  # seconds a run waits out a storage outage before it gives up

    @property
    def storage_url(self) -> str:
        from nas20k.runner.storage import default_storage

        return self.storage or default_storage(self.study_name)

    @property
    def artifacts_dir(self) -> Path:
        from nas20k.runner.storage import default_artifacts

        return Path(self.artifacts) if self.artifacts else default_artifacts(self.storage_url, self.study_name)

    @property
    def data_split(self) -> DataSplit:
        from nas20k.core.data import DataSplit

        return DataSplit(self.val_size, self.limit, self.split_seed)

    @cached_property
    def execution(self) -> Execution:
        """`auto` decided for this machine, once: the header, the study's record, the data loading and every
        worker read this answer (it travels to worker processes with the settings, already resolved)."""
        import torch

        from nas20k.core.runtime import mps_running

        device = pick_device(self.device)
        workers = self.jobs or default_jobs(device)
        cuda = device.type == "cuda"
        gpus = (1 if device.index is not None else torch.cuda.device_count()) if cuda else 0
        return Execution(
            runtime=resolve(str(device), self.precision, cuda_graphs=self.cuda_graphs),
            workers=workers,
            groups=worker_groups(workers, gpus, cuda and mps_running(), self.trials_per_process),
            threads=max(1, cpu_count() // workers) if device.type == "cpu" else None,
            gpus=gpus if cuda and device.index is None else 0,
            device_name=device_name(device),
            torch=torch.__version__,
        )

    def validate(self) -> SearchSettings:
        if self.trials < 1:
            raise UserError(f"--trials must be >= 1, got {self.trials}")
        if self.pruner not in PRUNERS:
            raise UserError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.jobs is not None and self.jobs < 1:
            raise UserError(f"--jobs must be >= 1, got {self.jobs}")
        if self.trials_per_process is not None and self.trials_per_process < 1:
            raise UserError(f"trials per process must be >= 1, got {self.trials_per_process}")
        if self.heartbeat < 1:
            raise UserError(f"--heartbeat must be >= 1 second, got {self.heartbeat}")
        if self.storage_patience < 0:
            raise UserError(f"--storage-patience must be >= 0 seconds, got {self.storage_patience}")
        if self.limit is not None:
            from nas20k.core.data import check_limit

            check_limit(self.limit)
        if self.artifacts_dir.exists() and not self.artifacts_dir.is_dir():
            raise UserError(f"--artifacts must be a folder, but {self.artifacts_dir} is a file")
        self.execution  # noqa: B018 - a --device or --precision that names nothing usable is refused here
        self.budget.validate()
        self.goal.validate()
        if self.starts and not self.warm_start:
            raise UserError("--start names designs for the warm start; it cannot go with --no-warm-start")
        return self
