"""Where studies live and how workers share them: storage, sampler, pruner, the worker loop, resume.

`--trials N` is the study's total of *trained* candidates (complete, pruned or diverged): rejected
candidates do not count, and re-running the same command continues until N is reached.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import sqlalchemy.exc
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from nas20k.data import check_files, default_data_dir, load_mnist
from nas20k.objective import TRAINED, Budget, Objective

STUDIES_DIR = Path("studies")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental" since v2.8
PRUNERS = ("asha", "hyperband", "median", "none")
SCHEMES = ("sqlite", "postgresql", "mysql")
MAX_REJECTED_IN_A_ROW = 200  # then the budget is too small for the space: stop instead of sampling forever


class BudgetError(RuntimeError):
    """The budget admits (almost) nothing of the search space."""


class StorageError(RuntimeError):
    """The storage cannot be used (malformed or unreachable URL, missing study); one readable line."""


@dataclass
class SearchSettings:
    study_name: str = "nas20k"
    storage: str | None = None  # an Optuna RDB URL; default sqlite:///studies/<study_name>.db
    artifacts: str | None = None  # where trial weights go; default studies/<study_name>-artifacts
    trials: int = 50
    budget: Budget = field(default_factory=Budget)
    pruner: str = "asha"
    jobs: int = 1
    seed: int = 0
    data_dir: str | None = None
    download: bool = True
    val_size: int = 5000
    limit: int | None = None  # train/test on the first N images only (smoke tests)
    heartbeat: int = 30  # seconds; a worker silent for 2x this is declared dead and its trial retried

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.study_name)

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.artifacts) if self.artifacts else default_artifacts(self.study_name)

    def validate(self) -> SearchSettings:
        if self.trials < 1:
            raise ValueError(f"--trials must be >= 1, got {self.trials}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {self.jobs}")
        if self.heartbeat < 1:
            raise ValueError(f"--heartbeat must be >= 1 second, got {self.heartbeat}")
        if self.artifacts_dir.exists() and not self.artifacts_dir.is_dir():
            raise ValueError(f"--artifacts must be a folder, but {self.artifacts_dir} is a file")
        self.budget.validate()
        return self


def default_storage(study_name: str) -> str:
    return f"sqlite:///{STUDIES_DIR / study_name}.db"


def default_artifacts(study_name: str) -> Path:
    return STUDIES_DIR / f"{study_name}-artifacts"


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.rpartition("@")
    if not sep or "://" not in head:
        return url
    scheme, creds = head.split("://", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{tail}"


def _scheme(url: str) -> str:
    """The database of a storage URL without its driver: postgresql+psycopg://... -> postgresql."""
    return url.split(":", 1)[0].split("+", 1)[0]


def _sqlite_file(url: str) -> Path | None:
    """The database file of a sqlite:/// URL, else None."""
    return Path(url.split("///", 1)[-1]) if _scheme(url) == "sqlite" else None


def open_storage(url: str, heartbeat: int | None = None) -> RDBStorage:
    """An RDB storage (SQLite file or PostgreSQL/MySQL server) with heartbeats and retry of dead workers' trials."""
    if "://" not in url or _scheme(url) not in SCHEMES:
        raise StorageError(f"malformed storage URL {_redact(url)!r}: expected sqlite:///path/to/file.db or postgresql://user:password@host/dbname")
    if (path := _sqlite_file(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Several local workers write to one file: wait for the lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    for attempt in range(5):
        try:
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat if heartbeat else None,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2) if heartbeat else None,
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            # Workers starting together on an empty database race to create Optuna's tables; the loser retries.
            error = e
            time.sleep(1 + attempt)
        except Exception as e:  # sqlalchemy/driver errors: unreachable host, bad credentials, missing driver
            error = e
            break
    detail = str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
    raise StorageError(f"cannot open storage {_redact(url)}: {detail}") from error


def load_study(url: str, study_name: str) -> optuna.Study:
    """An existing study, read-only use (best, trials, report, export)."""
    if (path := _sqlite_file(url)) is not None and not path.is_file():  # opening would create it
        raise StorageError(f"no study database at {path}; run `nas20k search` (with the same --study-name / --storage) first")
    storage = open_storage(url)
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name not in names:
        have = f"; it holds: {', '.join(names)}" if names else ""
        raise StorageError(f"no study named {study_name!r} in {_redact(url)}{have}; run `nas20k search` first")
    return optuna.load_study(study_name=study_name, storage=storage)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "asha":  # rungs at epochs 1, 3, 9: a third goes on at each; the cheapest way to a CPU result
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":  # brackets start at epochs 1, 3, 9: hedges ASHA's early look, costs ~2.5x more epochs
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)
    return optuna.pruners.NopPruner()


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    # group=True: the space is conditional (2 or 3 blocks); constant_liar: parallel workers avoid duplicates.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def status(trial: FrozenTrial) -> str:
    """complete | pruned | rejected | diverged | failed | running | waiting."""
    if trial.state in (TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
        return {TrialState.FAIL: "failed", TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}[trial.state]
    return trial.user_attrs.get("status", trial.state.name.lower())


def trained_count(trials: list[FrozenTrial]) -> int:
    return sum(status(t) in TRAINED for t in trials)


def _worker(settings: SearchSettings, index: int, threads: int | None) -> None:
    """One worker: its own data copy, sampler and pruner, optimizing the shared study until the target is met."""
    # Started in the background by a shell, a process inherits SIGINT ignored: take Ctrl-C / kill -INT back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if threads:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = load_mnist(settings.data_dir, val_size=settings.val_size, limit=settings.limit, device=device, download=False)
    storage = open_storage(settings.storage_url, settings.heartbeat)
    # Seeded by the study's progress too, so a resumed search does not replay the first run's samples.
    existing = len(storage.get_all_trials(storage.get_study_id_from_name(settings.study_name), deepcopy=False))
    study = optuna.load_study(
        study_name=settings.study_name,
        storage=storage,
        sampler=make_sampler(settings.seed + 1000 * index + existing),
        pruner=make_pruner(settings.pruner, settings.budget.max_epochs),
    )
    objective = Objective(data, settings.budget, FileSystemArtifactStore(str(settings.artifacts_dir)), settings.seed)

    def stop_when_done(study: optuna.Study, _: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        if trained_count(trials) >= settings.trials:
            study.stop()
        elif len(trials) >= MAX_REJECTED_IN_A_ROW and all(status(t) == "rejected" for t in trials[-MAX_REJECTED_IN_A_ROW:]):
            raise BudgetError(f"the last {MAX_REJECTED_IN_A_ROW} candidates were all rejected: --max-params {settings.budget.max_params:,} leaves no room in the search space")

    if trained_count(study.get_trials(deepcopy=False)) < settings.trials:
        study.optimize(objective, callbacks=[stop_when_done])


def _worker_process(settings: SearchSettings, index: int, threads: int) -> None:
    try:
        _worker(settings, index, threads)
    except KeyboardInterrupt:  # the trial is already recorded as failed by Optuna
        raise SystemExit(130) from None
    except BudgetError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(3) from None


def prepare(settings: SearchSettings) -> optuna.Study:
    """Check everything a search needs before any trial starts: settings, data files, storage; create or load the study."""
    settings.validate()
    check_files(Path(settings.data_dir) if settings.data_dir else default_data_dir(), settings.download)
    storage = open_storage(settings.storage_url, settings.heartbeat)
    study = optuna.create_study(study_name=settings.study_name, storage=storage, direction="maximize", load_if_exists=True)
    budget = {"max_params": settings.budget.max_params, "max_epochs": settings.budget.max_epochs}
    if study.user_attrs.get("budget", budget) != budget:
        raise ValueError(f"study {settings.study_name!r} was searched with budget {study.user_attrs['budget']}; use those flags or a new --study-name")
    study.set_user_attr("budget", budget)
    study.set_user_attr("trials_target", max(settings.trials, study.user_attrs.get("trials_target", 0)))
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    return study


def run_search(settings: SearchSettings, study: optuna.Study, on_progress: Callable[[list[FrozenTrial]], None] | None = None) -> None:
    """Run `settings.jobs` workers (in this process when 1) until the study holds `settings.trials` trained candidates."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(2.0):
            try:
                on_progress(study.get_trials(deepcopy=False))
            except Exception:  # a busy database or a closing interpreter: show progress next time
                pass

    watcher = threading.Thread(target=watch, daemon=True) if on_progress else None
    if watcher:
        watcher.start()
    try:
        if settings.jobs == 1:
            _worker(settings, 0, None)
        else:
            _run_processes(settings)
    finally:
        done.set()
        if on_progress:
            on_progress(study.get_trials(deepcopy=False))


def _run_processes(settings: SearchSettings) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // settings.jobs)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in _worker: Ctrl-C must reach us even from a background shell
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_process, args=(settings, i, threads), daemon=False) for i in range(settings.jobs)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:  # a terminal's Ctrl-C reaches them already; a `kill -INT` of this process does not
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.terminate()
        raise
    failed = [f"worker {i} exited with code {p.exitcode}" for i, p in enumerate(procs) if p.exitcode not in (0, None)]
    if failed:
        raise RuntimeError("; ".join(failed) + " (its trial is failed and retried; rerun the command to continue)")
