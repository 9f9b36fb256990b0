"""Running a search's or a confirmation's workers: each process runs its group of workers
(`settings.execution.groups`), one thread per worker when it has several; one group runs in this process, more as
spawned processes. All share the study through its storage; progress is polled every second; Ctrl-C and SIGTERM stop
them all."""

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

from nas20k.core.data import Mnist, load_mnist
from nas20k.core.runtime import Runtime
from nas20k.runner.outage import gave_up, gave_up_message
from nas20k.runner.settings import SearchSettings
from nas20k.runner.signals import catch_signals, stop_threads
from nas20k.runner.storage import open_storage, redact


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


def _load(settings: SearchSettings, runtime: Runtime) -> Mnist:
    return load_mnist(settings.data_dir, val_size=settings.val_size, split_seed=settings.split_seed,
                      limit=settings.limit, device=runtime.device, download=False)


def _start_worker(settings: SearchSettings, index: int, data: Mnist | None = None,
                  storage: RDBStorage | None = None) -> Worker:
    """Worker `index`, with the data its process already loaded onto the device (threads share it, read-only),
    on `storage` if given (the command's own, opened with heartbeats), else on a storage of its own."""
    runtime = settings.execution.runtime_of(index)
    data = data if data is not None else _load(settings, runtime)
    store = FileSystemArtifactStore(str(settings.artifacts_dir))
    label = f"worker {index}: " if settings.execution.workers > 1 else ""
    storage = storage or open_storage(settings.storage_url, settings.heartbeat, patience=settings.storage_patience,
                                      label=label)
    return Worker(index, settings, runtime, data, store, storage)


STORAGE_EXIT = 75  # a worker's exit code when its storage stayed unreachable past --storage-patience (EX_TEMPFAIL)


def _run_group(task: Task, settings: SearchSettings, group: list[int], storage: RDBStorage | None = None) -> None:
    """This process's workers: the one in this thread, or one thread each on shared data; the first on `storage`
    if given. A signal reaches the main thread only: it tells the threads (`stop_threads`), waits for them to record
    their trials, and raises."""
    catch_signals()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if settings.execution.workers > 1 and settings.execution.threads:
        torch.set_num_threads(settings.execution.threads)
    if len(group) == 1:
        task(_start_worker(settings, group[0], storage=storage))
        return
    data, errors = _load(settings, settings.execution.runtime_of(group[0])), []
    # Waited on as events, not Thread.join: a signal that interrupts join(timeout) makes CPython 3.11 mark the live
    # thread as stopped (the bpo-45274 fix releases the lock the thread itself holds), so a later join() returned at
    # once and its trial was left running (seen in test_a_signal_stops_every_worker_thread... under load).
    done = {i: threading.Event() for i in group}

    def run(index: int) -> None:
        try:
            task(_start_worker(settings, index, data, storage if index == group[0] else None))
        except BaseException as e:  # raised again in the main thread, after every thread has stopped
            errors.append(e)
        finally:
            done[index].set()

    for i in group:
        threading.Thread(target=run, args=(i,), name=f"worker {i}").start()
    try:
        for event in done.values():
            while not event.wait(0.5):  # a bare wait() would not let the main thread see a signal
                pass
    except KeyboardInterrupt as e:
        stop_threads(e)
        for event in done.values():
            event.wait()
        raise
    if errors:
        raise errors[0]


def _process(task: Task, settings: SearchSettings, group: list[int]) -> None:
    try:
        _run_group(task, settings, group)
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
                on_progress: Callable[[list[FrozenTrial]], None] | None = None,
                storage: RDBStorage | None = None) -> None:
    """Run `settings.execution.workers` workers on `task`, calling `on_progress` with `trials()` every second.
    Workers in this process: the first on `storage` (the command's, if given), so a machine with one worker holds
    2 connections to a server (its trials, its heartbeat), not 3."""
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
        if len(settings.execution.groups) == 1:
            try:
                _run_group(task, settings, settings.execution.groups[0], storage)
            except Exception as e:
                if stopped := gave_up(e):
                    raise WorkerError(str(stopped)) from None
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
    procs = [ctx.Process(target=_process, args=(task, settings, g), daemon=False) for g in settings.execution.groups]
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
    failed = [f"worker {', '.join(map(str, g))} exited with code {p.exitcode}"
              for g, p in zip(settings.execution.groups, procs, strict=True) if p.exitcode not in (0, None)]
    if failed:
        raise WorkerError("; ".join(failed) + " (its trial is failed and retried; rerun the command to continue)")


