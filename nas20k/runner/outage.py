"""Riding out a storage outage: a worker's storage retries connection-level errors (server restarting, connection
refused or reset, SQLite locked past its timeout) with backoff for --storage-patience seconds, saying once when it
waits and once when the storage is back; other errors fail at once (docs/reliability.md)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import sqlalchemy.event
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from nas20k.base.errors import UserError
from nas20k.base.optuna_private import (
    CACHED_BACKEND_CALLS,
    CREATE_TRIAL_ROW,
    STALE_TRIAL_IDS,
    create_trial_row,
    stale_trial_ids,
    trial_id,
)
from nas20k.runner.lost import OWNER, mark_lost, owner_name

FIRST_DELAY, MAX_DELAY = 0.5, 4.0  # seconds between tries of a storage call during an outage, doubling


class StorageUnavailable(UserError):
    """The storage stayed unreachable for longer than --storage-patience: the run stops (docs/reliability.md)."""


def gave_up_message(where: str, patience: float, full: bool = False) -> str:
    """`where`: the storage URL without its password (`storage.redact`); `full`: the server refused for want of
    connection slots, not because it was down."""
    if full:
        return (f"database server {where} full (too many clients) for --storage-patience {patience:g} s; stopped. "
                "Raise its max_connections, put a pooler in front of it (PgBouncer, transaction pooling: "
                "docs/reliability.md), or run fewer --jobs; then rerun the same command")
    return (f"storage {where} still unreachable after --storage-patience {patience:g} s; stopped. "
            "Rerun the same command once it is back: the trials that were training are retrained")


class ServerFull(Exception):
    """A server refused a new connection for want of slots (`server_full`); its message is the server's."""


# What PostgreSQL says when every connection slot is taken (its max_connections, less the reserved ones), and
# what PgBouncer says when a client waited past its query_wait_timeout for a server connection.
_FULL = ("too many clients", "remaining connection slots are reserved", "query_wait_timeout")


def _chain(e: BaseException | None) -> list[BaseException]:
    """`e` and what it was raised from or while handling, outermost first."""
    seen: list[BaseException] = []
    while e is not None and all(e is not s for s in seen):
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def server_full(e: BaseException) -> bool:
    """Whether the database server refused a connection for want of slots: an outage to wait out (others finish
    and let go), not a typo in the URL, even on a command's first contact."""
    return any(m in str(x).lower() for x in _chain(e) for m in _FULL)


# Connection-level errors that a message shows to be permanent after all: retrying cannot help.
_PERMANENT = ("no such table", "no such column", "already exists", "does not exist", "authentication failed",
              "permission denied", "syntax error", "readonly database", "read-only")


def _lost_connection(e: BaseException | None) -> BaseException | None:
    """The connection-level error behind `e`, if any: a lost or refused connection, a server shutting down or
    starting up, a lock held past its timeout (SQLite "database is locked"), a pool checkout timeout. Looks through
    Optuna's StorageInternalError (raised `from` the database error) and SQLAlchemy's own errors raised while
    handling one (PendingRollbackError, when Optuna's `_get_trials` retries a query on the broken session)."""
    seen: set[int] = set()
    while isinstance(e, (StorageInternalError, sqlalchemy.exc.SQLAlchemyError)) and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sqlalchemy.exc.DBAPIError):
            if e.connection_invalidated:
                return e
            if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
                return None if any(m in str(e).lower() for m in _PERMANENT) else e
            return None  # integrity, programming, data errors
        if isinstance(e, sqlalchemy.exc.TimeoutError):
            return e
        e = e.__cause__ or e.__context__
    return None


def is_transient(e: BaseException) -> bool:
    """What a retry a little later can get past (`_lost_connection`). Integrity and programming errors, bad
    credentials, a missing table or database are not; nor is anything but a storage error."""
    return _lost_connection(e) is not None


def _reason(e: BaseException) -> str:
    """The driver's first line: 'connection failed: ... Connection refused', 'the database system is shutting down'."""
    e = _lost_connection(e) or e
    e = getattr(e, "orig", None) or e
    text = str(e).strip()
    return text.splitlines()[0] if text else e.__class__.__name__


def gave_up(e: BaseException | None) -> StorageUnavailable | None:
    """The StorageUnavailable `e` came of, if a storage gave up, looking through what was raised while handling it:
    past its patience, Optuna 5.0.0's `_run_trial` turns our StorageUnavailable into an UnboundLocalError
    ('updated_state'), its `finally` reading a variable that the failed `_tell_with_warning` and
    `storage.get_trial` never set."""
    return next((x for x in _chain(e) if isinstance(x, StorageUnavailable)), None)


T = TypeVar("T")


class Outage:
    """One process's view of whether its storage answers, shared by its threads (the trial and its heartbeat).

    `call` retries a call that fails on a transient error, with exponential backoff (FIRST_DELAY, doubling up to
    MAX_DELAY), for up to `patience` seconds from the first failure of the outage: one line on stderr when it
    starts, one when the storage is back. Past the window every call of the process fails at once with
    StorageUnavailable: the run stops, and what the database holds is whole (each write is one transaction;
    a trial left RUNNING is its dead worker's, retrained by the next run). `patience` None: no retries at all.
    `retry_if` narrows what is waited out (a command's first contact: only a full server, `server_full`)."""

    def __init__(self, where: str, patience: float | None, label: str = "", *,
                 retry_if: Callable[[BaseException], bool] = is_transient,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 stream: TextIO | None = None) -> None:
        self.where, self.patience, self.label, self._retry_if = where, patience, label, retry_if
        self.full = False  # the last outage was a full server (too many clients), not a server down
        self._sleep, self._clock, self._stream = sleep, clock, stream
        self._lock = threading.Lock()
        self._local = threading.local()
        self.down_since: float | None = None  # when the current outage started (None: the storage answers)
        self.back_at: float | None = None  # when the last outage ended
        self.given_up = False

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.patience is None or getattr(self._local, "inside", False):  # an inner call: the outer one retries
            return fn(*args, **kwargs)
        self._local.inside = True
        try:
            delay = FIRST_DELAY
            while True:
                if self.given_up:
                    raise StorageUnavailable(gave_up_message(self.where, self.patience, self.full))
                try:
                    result = fn(*args, **kwargs)
                except Exception as e:
                    if not self._retry_if(e):
                        raise
                    left = self.failed(e)
                    if left <= 0:
                        raise StorageUnavailable(gave_up_message(self.where, self.patience, self.full)) from e
                    self._sleep(min(delay, left))
                    delay = min(2 * delay, MAX_DELAY)
                else:
                    self.answered()
                    return result
        finally:
            self._local.inside = False

    def try_once(self, fn: Callable[..., object], *args: Any) -> None:
        """For the heartbeat: one try; a transient failure is noted (a missed beat is made up by the next one)."""
        if self.patience is None:
            fn(*args)
            return
        if self.given_up:
            return
        try:
            fn(*args)
        except Exception as e:
            if not is_transient(e):
                raise
            self.failed(e)
        else:
            self.answered()

    def failed(self, e: BaseException) -> float:
        """Note a transient failure (saying so when it starts an outage); the seconds of patience left."""
        assert self.patience is not None
        with self._lock:
            now = self._clock()
            if self.down_since is None:
                self.down_since, self.full = now, server_full(e)
                if self.patience > 0 and self.full:
                    self._say(f"database server full (too many clients): waiting up to {self.patience:g} s "
                              "for a free connection")
                elif self.patience > 0:
                    self._say(f"storage unreachable, retrying for up to {self.patience:g} s: {_reason(e)}")
            left = self.down_since + self.patience - now
            self.given_up = self.given_up or left <= 0
            return left

    def answered(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is not None:
                now = self._clock()
                self._say(f"storage back after {now - self.down_since:.0f} s")
                self.down_since, self.back_at = None, now

    def unsettled(self, seconds: float) -> bool:
        """Down now, or back for less than `seconds`."""
        return self.down_since is not None or (self.back_at is not None and self._clock() - self.back_at < seconds)

    def _say(self, text: str) -> None:
        print(f"{self.label}{text}", file=self._stream or sys.stderr, flush=True)


def _retrying(base: type, name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self.outage.call(getattr(base, name), self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


# What PatientStorage retries: every call of Optuna 5.0.0's RDBStorage that reads or writes the database, and so
# every storage call of `Study.optimize` (`ask`: pop a queued trial, create one; the sampler's and the pruner's
# reads; `Trial.suggest_*`, `set_user_attr`, `report`; `tell`; `upload_artifact`), of `fail_stale_trials`, of
# `load_study`/`create_study` and of our own records and planning lock; through `_CachedStorage` too
# (CACHED_BACKEND_CALLS). SQLAlchemy's pool_pre_ping (servers) replaces a pooled connection that the outage broke,
# so a retry after the outage runs on a fresh one. `record_heartbeat` is tried once (`Outage.try_once`).
RETRIED = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
           "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
           "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
           "get_trial_number_from_id", "get_trial_param", "set_trial_intermediate_value", "set_trial_user_attr",
           "set_trial_system_attr", "get_trial", "get_all_trials", "get_n_trials", "get_best_trial", "get_trial_params",
           "get_trial_user_attrs", "get_trial_system_attrs", *CACHED_BACKEND_CALLS)


def patient(base: type) -> type:
    """`base` (an RDBStorage, or a fake of one in tests) with its calls retried through `self.outage`."""

    class Patient(base):  # type: ignore[valid-type,misc]
        outage = Outage("", None)  # open_storage sets each storage's own

        def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
            tries = 0

            def once() -> bool:
                nonlocal tries
                tries += 1
                try:
                    return base.set_trial_state_values(self, trial_id, state, values)
                except UpdateFinishedTrialError:
                    # A try whose commit went through but whose answer the outage lost: the retry finds the trial
                    # finished (by us). Without this, Optuna 5.1.0's `_tell_with_warning` fails a trial it had told.
                    if tries > 1 and state.is_finished() and base.get_trial(self, trial_id).state == state:
                        return True
                    raise

            done = self.outage.call(once)
            if done and state == TrialState.RUNNING:  # a queued trial popped by `Study.ask`: it is ours
                self._claim(trial_id)
            return done

        def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
            return trial_id(create_row(self, study_id, template_trial))  # retried there, and claimed once

        def _claim(self, trial_id: int) -> None:
            """Name this process as the trial's owner at once (the objective writes it again after sampling):
            `recover_lost_trials` must never take a trial just popped for one left by a dead worker."""
            self.set_trial_user_attr(trial_id, OWNER, owner_name())

        def delete_study(self, study_id: int) -> None:
            tries = 0

            def once() -> None:
                nonlocal tries
                tries += 1
                try:
                    base.delete_study(self, study_id)
                except KeyError:
                    if tries == 1:  # a retry that finds it gone: the first try's commit went through
                        raise

            self.outage.call(once)

        def record_heartbeat(self, trial_id: int) -> None:
            # Tried once: the heartbeat thread must not block the trial's end (Optuna joins it), and a missed beat
            # is made up by the next one, `heartbeat` seconds later.
            self.outage.try_once(base.record_heartbeat, self, trial_id)

    def create_row(self: Patient, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        trial = self.outage.call(create_trial_row, base, self, study_id, template_trial)
        if trial.state == TrialState.RUNNING:  # `Study.ask` with nothing queued: a new trial, ours
            self._claim(trial_id(trial))
        return trial

    def stale_ids(self: Patient, study_id: int) -> list[int]:
        """Trials silent for longer than the grace period, as Optuna's `fail_stale_trials` will fail them; each
        first marked with why, and whether it is retried (by RequeueLostTrial, after it is failed). Right after
        an outage every trial is silent: none is stale until the live workers have beaten again."""
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        if self.outage.unsettled(2 * grace):
            return []
        ids = self.outage.call(stale_trial_ids, base, self, study_id)
        if ids:
            trials = self.get_all_trials(study_id, deepcopy=False)
            by_id = {trial_id(t): t for t in trials}
            for i in ids:
                t = by_id[i]
                why = f"worker {t.user_attrs.get(OWNER, '?')} silent for more than {grace} s (no heartbeat)"
                with contextlib.suppress(UpdateFinishedTrialError):
                    mark_lost(self, t, trials, why)
        return ids

    # the two private RDBStorage calls it overrides (optuna_private says why)
    setattr(Patient, CREATE_TRIAL_ROW, create_row)
    setattr(Patient, STALE_TRIAL_IDS, stale_ids)
    for name in RETRIED:
        if name not in Patient.__dict__ and hasattr(base, name):
            setattr(Patient, name, _retrying(base, name))
    Patient.__name__ = Patient.__qualname__ = f"Patient{base.__name__}"
    return Patient


PatientStorage = patient(RDBStorage)
