"""Where studies live and how workers share them: storage, sampler, pruner, warm start, the worker loop,
resume after interruptions, and seed confirmation of the winners.

`--trials N` is the study's total of *trained* candidates (complete, pruned or diverged): rejected
candidates do not count, and re-running the same command continues until N is reached.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import optuna
import sqlalchemy.event
import sqlalchemy.exc
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas20k.data import check_files, check_limit, default_data_dir, load_mnist
from nas20k.errors import UserError
from nas20k.objective import Budget, Goal, Objective, run_candidate
from nas20k.record import TrialRecord, attach_confirmations, records, write
from nas20k.runtime import Runtime, pick_device
from nas20k.space import Candidate, params_of, warm_start

STUDIES_DIR = Path("studies")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental" since v2.8
PRUNERS = ("asha", "asha3", "median", "hyperband", "none")
DEFAULT_PRUNER = "asha"  # won benchmarks/pruners.py: the first good candidate soonest (README)
SCHEMES = ("sqlite", "postgresql", "mysql")
MAX_REJECTED_IN_A_ROW = 200  # then the budget is too small for the space: stop instead of sampling forever
CONFIRM_SUFFIX = ":confirm"  # the study holding a search's seed-confirmation runs, in the same storage
LOCK_SUFFIX = ":planning"  # exists only while one process enqueues trials (warm start, retries, confirmations)


class BudgetError(RuntimeError):
    """The budget admits (almost) nothing of the search space."""


class WorkerError(RuntimeError):
    """A worker process died (its traceback is on stderr already); the parent says so in one line."""


class StorageError(UserError):
    """The storage cannot be used (malformed or unreachable URL, missing study); one readable line."""


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_jobs(device: torch.device) -> int:
    """Measured: on 2 CPU cores, 2 one-thread workers train 1.60x the images of one two-thread worker
    (benchmarks/jobs.py); on an H200 with CUDA graphs, 8 workers train 2.5x the images of one under CUDA MPS and
    0.89x without it (`runtime.mps_running`), where their per-trial host work (sampling, capture, evaluation)
    still overlaps the GPU's."""
    if device.type != "cuda":
        return cpu_count()
    return 8 if device.index is not None else 8 * torch.cuda.device_count()  # cuda:N pins every worker to one GPU


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
    seed: int = 0
    warm_start: bool = True
    device: str = "auto"
    cuda_graphs: bool = True
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
        return Path(self.artifacts) if self.artifacts else default_artifacts(self.storage_url, self.study_name)

    @property
    def workers(self) -> int:
        return self.jobs or default_jobs(pick_device(self.device))

    def runtime(self, index: int = 0, threads: int | None = None) -> Runtime:
        device = pick_device(self.device)
        if device.type == "cuda" and device.index is None:  # many workers spread over the GPUs
            device = torch.device("cuda", index % torch.cuda.device_count())
        return Runtime(device=str(device), cuda_graphs=self.cuda_graphs, threads=threads)

    def validate(self) -> SearchSettings:
        if self.trials < 1:
            raise UserError(f"--trials must be >= 1, got {self.trials}")
        if self.pruner not in PRUNERS:
            raise UserError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.jobs is not None and self.jobs < 1:
            raise UserError(f"--jobs must be >= 1, got {self.jobs}")
        if self.heartbeat < 1:
            raise UserError(f"--heartbeat must be >= 1 second, got {self.heartbeat}")
        check_limit(self.limit)
        if self.artifacts_dir.exists() and not self.artifacts_dir.is_dir():
            raise UserError(f"--artifacts must be a folder, but {self.artifacts_dir} is a file")
        pick_device(self.device)
        self.budget.validate()
        self.goal.validate()
        return self


def default_storage(study_name: str) -> str:
    return f"sqlite:///{STUDIES_DIR / study_name}.db"


def default_artifacts(storage_url: str, study_name: str) -> Path:
    """Next to the SQLite file (so a study folder is self-contained), else studies/ of this folder."""
    path = _sqlite_file(storage_url)
    return (path.parent if path is not None else STUDIES_DIR) / f"{study_name}-artifacts"


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
        # Several local workers write to one file: wait for the lock instead of failing. isolation_level None
        # hands transactions to SQLAlchemy, which `_serialize_sqlite` makes begin with the write lock.
        engine_kwargs = {"connect_args": {"timeout": 60, "isolation_level": None}}
    else:
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    for attempt in range(5):
        try:
            storage = RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat if heartbeat else None,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2) if heartbeat else None,
            )
            if path is not None:
                _serialize_sqlite(storage.engine)
            return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as e:
            # Workers starting together on an empty database race to create Optuna's tables; the loser retries
            # (SQLite reports the race as OperationalError "table ... already exists").
            error = e
            if isinstance(e, sqlalchemy.exc.OperationalError) and "already exists" not in str(e):
                break
            time.sleep(1 + attempt)
        except Exception as e:  # sqlalchemy/driver errors: unreachable host, bad credentials, missing driver
            error = e
            break
    detail = str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
    raise StorageError(f"cannot open storage {_redact(url)}: {detail}") from error


def _serialize_sqlite(engine: sqlalchemy.engine.Engine) -> None:
    """Make every transaction on a SQLite file take the write lock when it begins (SQLAlchemy's recipe for
    serializable SQLite). Optuna moves a queued trial to RUNNING by reading its state and then writing it,
    relying on SELECT ... FOR UPDATE, which SQLite ignores: two workers could both take the same queued trial
    (seen in CI: a warm-start trial trained twice, the second worker crashed telling a COMPLETE trial)."""
    sqlalchemy.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))


def load_study(url: str, study_name: str) -> optuna.Study:
    """An existing study, read-only use (best, trials, report, export, confirm)."""
    if (path := _sqlite_file(url)) is not None and not path.is_file():  # opening would create it
        raise StorageError(f"no study database at {path}; run `nas20k search` (with the same --study-name / --storage) first")
    storage = open_storage(url)
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name not in names:
        shown = [n for n in names if not n.endswith((CONFIRM_SUFFIX, LOCK_SUFFIX))]
        have = f"; it holds: {', '.join(shown)}" if shown else ""
        raise StorageError(f"no study named {study_name!r} in {_redact(url)}{have}; run `nas20k search` first")
    return optuna.load_study(study_name=study_name, storage=storage)


def search_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of a search as a record, completed ones with their seed runs (from the confirm study)."""
    names = {s.study_name for s in study._storage.get_all_studies()}
    confirm_name = study.study_name + CONFIRM_SUFFIX
    confirm = optuna.load_study(study_name=confirm_name, storage=study._storage).get_trials(deepcopy=False) if confirm_name in names else []
    return attach_confirmations(records(study.get_trials(deepcopy=False)), records(confirm))


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "asha":  # rungs at epochs 1, 3, 9: a third goes on at each; the cheapest verdicts
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "asha3":  # rungs at epochs 3, 9: no verdict on one epoch, where fast starters win and late bloomers lose
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=3, reduction_factor=3)
    if name == "hyperband":  # brackets start at epochs 1, 3, 9: hedges ASHA's early look, costs ~2.5x more epochs
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "median":  # below the median of earlier trials at the same epoch, after 5 epochs and 5 trials
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)
    return optuna.pruners.NopPruner()


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    # group=True: the space is conditional (2 or 3 blocks); constant_liar: parallel workers avoid duplicates.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def trained_count(trials: list[FrozenTrial]) -> int:
    return sum(r.trained for r in records(trials))


@contextlib.contextmanager
def planning_lock(storage: RDBStorage, study_name: str, stale_after: float = 120) -> Iterator[None]:
    """One process at a time decides what to enqueue. The lock is a study name, which the database keeps
    unique: creating it succeeds for exactly one process; it is deleted when the planning is done."""
    name, deadline = study_name + LOCK_SUFFIX, time.monotonic() + stale_after
    while True:
        try:
            lock_id = storage.create_new_study([StudyDirection.MINIMIZE], study_name=name)
            break
        except optuna.exceptions.DuplicatedStudyError:
            if time.monotonic() > deadline:  # its holder died while planning
                with contextlib.suppress(KeyError):
                    storage.delete_study(storage.get_study_id_from_name(name))
            time.sleep(0.2)
    try:
        yield
    finally:
        storage.delete_study(lock_id)


def _enqueue_warm_start(study: optuna.Study, settings: SearchSettings) -> list[str]:
    """Seed a new study with the known designs that fit the budget, ours scaled to it (once per study, whoever
    starts first)."""
    if not settings.warm_start or study.user_attrs.get("warm_started") is not None or study.get_trials(deepcopy=False):
        study.set_user_attr("warm_started", study.user_attrs.get("warm_started", []))
        return []
    names = []
    for name, candidate in warm_start(settings.budget.max_epochs, settings.seed, settings.budget.max_params).items():
        study.enqueue_trial(params_of(candidate), user_attrs={"warm_start": name})
        names.append(name)
    study.set_user_attr("warm_started", names)
    return names


def _enqueue_retries(study: optuna.Study) -> list[int]:
    """Queue every trial interrupted in training again with the same parameters (retrained from its first epoch);
    one stopped while sampling has no candidate yet, and nothing to retrain."""
    trials = study.get_trials(deepcopy=False)
    recs = records(trials)
    retried = {r.retry_of for r in recs if r.retry_of is not None}
    todo = [r for r in recs if r.status == "interrupted" and r.candidate is not None and r.number not in retried]
    for r in todo:
        study.enqueue_trial(trials[r.number].params, user_attrs={"retry_of": r.number, **({"warm_start": r.warm_start} if r.warm_start else {})})
    return [r.number for r in todo]


def prepare(settings: SearchSettings) -> tuple[optuna.Study, dict]:
    """Check everything a search needs before any trial starts (settings, data files, storage); create or load
    the study; enqueue the warm start (new study) and interrupted trials (resume). Returns the study and what
    was queued."""
    settings.validate()
    check_files(Path(settings.data_dir) if settings.data_dir else default_data_dir(), settings.download)
    storage = open_storage(settings.storage_url, settings.heartbeat)
    study = optuna.create_study(study_name=settings.study_name, storage=storage, direction="maximize", load_if_exists=True)
    fixed = {"budget": asdict(settings.budget), "goal": asdict(settings.goal)}  # read back by export.study_budget / study_goal
    for key, value in fixed.items():
        if study.user_attrs.get(key, value) != value:
            raise UserError(f"study {settings.study_name!r} was searched with {key} {study.user_attrs[key]}; use those flags or a new --study-name")
        study.set_user_attr(key, value)
    study.set_metric_names(["val score" if settings.goal.kind == "accuracy" else f"val score, size bonus above {settings.goal.target:.2%}"])
    study.set_user_attr("trials_target", max(settings.trials, study.user_attrs.get("trials_target", 0)))
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    with planning_lock(storage, settings.study_name):
        queued = {"warm_start": _enqueue_warm_start(study, settings), "retries": _enqueue_retries(study)}
    return study, queued


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM (timeout, kill, schedulers) is handled like Ctrl-C: the running trial is recorded as interrupted."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _redeliver(unraisable: sys.UnraisableHookArgs) -> None:
    """A signal that lands while Python runs a garbage-collection callback (seen: SQLAlchemy's `_collection_gced`)
    raises our KeyboardInterrupt inside it, where Python prints it as "Exception ignored" and drops it: the search
    would go on. Send it again from another thread, so it lands after this hook and the callback have returned
    (should it land in another such callback, it comes back here)."""
    exc = unraisable.exc_value
    if isinstance(exc, KeyboardInterrupt) and exc.args and exc.args[0] in signal.Signals.__members__:
        threading.Timer(0.01, os.kill, (os.getpid(), signal.Signals[exc.args[0]])).start()
        return
    sys.__unraisablehook__(unraisable)


def _catch_signals() -> None:
    # Started in the background by a shell, a process inherits SIGINT ignored: take Ctrl-C / kill -INT back.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.unraisablehook = _redeliver


def _worker(settings: SearchSettings, index: int, threads: int | None, task: str) -> None:
    """One worker: its own data copy on its device, optimizing the shared study (`task` "search") or running
    the queued seed confirmations (`task` "confirm") until there is nothing left."""
    _catch_signals()
    runtime = settings.runtime(index, threads)
    if threads:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = load_mnist(settings.data_dir, val_size=settings.val_size, limit=settings.limit, device=runtime.device, download=False)
    store = FileSystemArtifactStore(str(settings.artifacts_dir))
    storage = open_storage(settings.storage_url, settings.heartbeat)
    if task == "confirm":
        confirm = optuna.load_study(study_name=settings.study_name + CONFIRM_SUFFIX, storage=storage, pruner=optuna.pruners.NopPruner())
        _confirm_worker(confirm, data, runtime, store)
        return
    # Seeded by the study's progress too, so a resumed search does not replay the first run's samples.
    existing = len(storage.get_all_trials(storage.get_study_id_from_name(settings.study_name), deepcopy=False))
    study = optuna.load_study(
        study_name=settings.study_name,
        storage=storage,
        sampler=make_sampler(settings.seed + 1000 * index + existing),
        pruner=make_pruner(settings.pruner, settings.budget.max_epochs),
    )
    objective = Objective(data, settings.budget, store, goal=settings.goal, runtime=runtime, seed=settings.seed)

    def stop_when_done(study: optuna.Study, _: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        # Other workers' running trials will count too: starting one more would leave this worker's core idle
        # while it trains past --trials (seen: a 51st trial trained for 12 minutes on one of two cores).
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if trained_count(trials) + running >= settings.trials:
            study.stop()
        elif len(trials) >= MAX_REJECTED_IN_A_ROW and all(r.status == "rejected" for r in records(trials[-MAX_REJECTED_IN_A_ROW:])):
            raise BudgetError(f"the last {MAX_REJECTED_IN_A_ROW} candidates were all rejected: --max-params {settings.budget.max_params:,} leaves no room in the search space")

    if trained_count(study.get_trials(deepcopy=False)) < settings.trials:
        study.optimize(objective, callbacks=[stop_when_done])


def _worker_process(settings: SearchSettings, index: int, threads: int, task: str) -> None:
    try:
        _worker(settings, index, threads, task)
    except KeyboardInterrupt:  # the trial is already recorded as interrupted
        raise SystemExit(130) from None
    except BudgetError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(3) from None


def run_workers(settings: SearchSettings, study: optuna.Study, task: str = "search",
                on_progress: Callable[[list[FrozenTrial]], None] | None = None) -> None:
    """Run `settings.workers` workers (in this process when 1) on `task` ("search" or "confirm"), calling
    `on_progress` with `study`'s trials every second; Ctrl-C and SIGTERM stop them all, recorded as interrupted."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(1.0):
            try:
                on_progress(study.get_trials(deepcopy=False))
            except Exception:  # a busy database or a closing interpreter: show progress next time
                pass

    watcher = threading.Thread(target=watch, daemon=True) if on_progress else None
    if watcher:
        watcher.start()
    try:
        if settings.workers == 1:
            _worker(settings, 0, None, task)
        else:
            _run_processes(settings, task)
    finally:
        done.set()
        if on_progress:
            on_progress(study.get_trials(deepcopy=False))


def _run_processes(settings: SearchSettings, task: str) -> None:
    threads = max(1, cpu_count() // settings.workers)
    _catch_signals()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_process, args=(settings, i, threads, task), daemon=False) for i in range(settings.workers)]
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
    failed = [f"worker {i} exited with code {p.exitcode}" for i, p in enumerate(procs) if p.exitcode not in (0, None)]
    if failed:
        raise WorkerError("; ".join(failed) + " (its trial is failed and retried; rerun the command to continue)")


# --- Seed confirmation -----------------------------------------------------------------------------------

def confirm_candidates(recs: list[TrialRecord], study: optuna.Study, top: int) -> list[TrialRecord]:
    """The `top` completed trials by the study's objective (val score; for a `smallest` goal, passing and small)."""
    values = {t.number: t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    complete = [r for r in recs if r.status == "complete" and r.number in values]
    return sorted(complete, key=lambda r: (-values[r.number], r.number))[:top]


def plan_confirmations(settings: SearchSettings, top: int, seeds: int) -> tuple[optuna.Study, list[tuple[int, int]]]:
    """Queue a run for every (top trial, seed) that has none finished, running or queued, so each of the top
    trials reaches `seeds` seeds: its own plus seeds+1, +2, ... A killed or interrupted run is queued again."""
    settings.validate()
    check_files(Path(settings.data_dir) if settings.data_dir else default_data_dir(), settings.download)
    study = load_study(settings.storage_url, settings.study_name)
    storage = open_storage(settings.storage_url, settings.heartbeat)
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)  # a confirm may write its weights to a new folder
    confirm = optuna.create_study(study_name=settings.study_name + CONFIRM_SUFFIX, storage=storage, direction="maximize",
                                  load_if_exists=True, pruner=optuna.pruners.NopPruner())
    confirm.set_metric_names(["val score"])
    queued: list[tuple[int, int]] = []
    with planning_lock(storage, settings.study_name):
        optuna.storages.fail_stale_trials(confirm)  # runs of killed workers, silent for two heartbeats
        runs = records(confirm.get_trials(deepcopy=False))
        taken = {(r.confirms, r.seed) for r in runs if r.status in ("complete", "running", "waiting")}
        for r in confirm_candidates(search_records(study), study, top):
            own = r.candidate.train.seed
            for seed in [own + k for k in range(1, seeds)]:
                if (r.number, seed) not in taken:
                    confirm.enqueue_trial({}, user_attrs={"confirms": r.number, "seed": seed, "candidate": r.candidate.to_dict(), "params": r.params})
                    queued.append((r.number, seed))
    return confirm, queued


def _pop_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Take one queued run for this worker (the database lets only one worker move it to RUNNING)."""
    for t in study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            if study._storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, t._trial_id)
    return None


@contextlib.contextmanager
def _heartbeat(storage: RDBStorage, trial_id: int) -> Iterator[None]:
    """Beat for a confirm run as Optuna does for search trials, so a killed worker's run is failed and re-queued."""
    interval = storage.get_heartbeat_interval()
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):
                storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True)
    if interval:
        thread.start()
    try:
        yield
    finally:
        stop.set()


def _confirm_worker(study: optuna.Study, data, runtime: Runtime, store: FileSystemArtifactStore) -> None:  # noqa: ANN001
    while (trial := _pop_waiting(study)) is not None:
        a = trial.user_attrs
        base = Candidate.from_dict(a["candidate"])
        candidate = Candidate(base.spec, replace(base.train, seed=a["seed"]))
        write(trial, worker=f"{os.uname().nodename}:{os.getpid()}")
        with _heartbeat(study._storage, trial._trial_id):
            try:
                value = run_candidate(trial, candidate, data, runtime, store)
            except optuna.TrialPruned:  # diverged on this seed: recorded as such
                study.tell(trial, state=TrialState.PRUNED)
                continue
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
        study.tell(trial, value)
