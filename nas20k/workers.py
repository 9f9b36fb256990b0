"""Running a search's or a confirmation's workers: in this process when there is one, else as spawned processes
sharing the study through its storage; progress polled every second; Ctrl-C and SIGTERM stop them all."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from nas20k.data import Mnist, load_mnist
from nas20k.outage import gave_up, gave_up_message
from nas20k.runtime import Runtime
from nas20k.settings import SearchSettings
from nas20k.signals import catch_signals
from nas20k.storage import open_storage, redact


class BudgetError(RuntimeError):
    """The budget admits (almost) nothing of the search space."""


class WorkerError(RuntimeError):
    """A worker process died (its traceback is on stderr already); the parent says so in one line."""


@dataclass
class Worker:
    """What one worker trains with: its index, runtime, its own copy of the data on its device, the weights
    store and its own storage connection."""

    index: int
    settings: SearchSettings
    runtime: Runtime
    data: Mnist
    store: FileSystemArtifactStore
    storage: RDBStorage


Task = Callable[[Worker], None]  # a top-level function (spawned processes import it by name)


def _start_worker(settings: SearchSettings, index: int) -> Worker:
    catch_signals()
    if settings.workers > 1 and settings.threads:
        torch.set_num_threads(settings.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    runtime = settings.runtime(index)
    data = load_mnist(settings.data_dir, val_size=settings.val_size, limit=settings.limit, device=runtime.device,
                      download=False)
    store = FileSystemArtifactStore(str(settings.artifacts_dir))
    label = f"worker {index}: " if settings.workers > 1 else ""
    storage = open_storage(settings.storage_url, settings.heartbeat, patience=settings.storage_patience, label=label)
    return Worker(index, settings, runtime, data, store, storage)


STORAGE_EXIT = 75  # a worker's exit code when its storage stayed unreachable past --storage-patience (EX_TEMPFAIL)


def _process(task: Task, settings: SearchSettings, index: int) -> None:
    try:
        task(_start_worker(settings, index))
    except KeyboardInterrupt:  # the trial is already recorded as interrupted
        raise SystemExit(130) from None
    except BudgetError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(3) from None
    except Exception as e:
        if gave_up(e):  # the parent says so, once for all workers
            raise SystemExit(STORAGE_EXIT) from None
        raise


def run_workers(settings: SearchSettings, task: Task, trials: Callable[[], list[FrozenTrial]],
                on_progress: Callable[[list[FrozenTrial]], None] | None = None) -> None:
    """Run `settings.workers` workers on `task`, calling `on_progress` with `trials()` every second."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(1.0):
            try:
                on_progress(trials())
            except Exception:  # a busy database or a closing interpreter: show progress next time
                pass

    watcher = threading.Thread(target=watch, daemon=True) if on_progress else None
    if watcher:
        watcher.start()
    try:
        if settings.workers == 1:
            try:
                task(_start_worker(settings, 0))
            except Exception as e:
                if gave_up(e):
                    where = redact(settings.storage_url)
                    raise WorkerError(gave_up_message(where, settings.storage_patience)) from None
                raise
        else:
            _run_processes(settings, task)
    finally:
        done.set()
        if on_progress:
            with contextlib.suppress(Exception):  # the storage may be the reason the workers stopped
                on_progress(trials())


def _run_processes(settings: SearchSettings, task: Task) -> None:
    catch_signals()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_process, args=(task, settings, i), daemon=False) for i in range(settings.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt as e:
        sig = signal.Signals[e.args[0]] if e.args else signal.SIGINT
        for p in procs:  # a terminal's Ctrl-C reaches them already; a `kill` of this process does not
            if p.is_alive():
                os.kill(p.pid, sig)
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.terminate()
        raise
    if any(p.exitcode == STORAGE_EXIT for p in procs):
        raise WorkerError(gave_up_message(redact(settings.storage_url), settings.storage_patience))
    failed = [f"worker {i} exited with code {p.exitcode}" for i, p in enumerate(procs) if p.exitcode not in (0, None)]
    if failed:
        raise WorkerError("; ".join(failed) + " (its trial is failed and retried; rerun the command to continue)")


