"""Where studies live: storage URLs and their defaults, opening an RDB storage (SQLite file or a server), loading a
study by name, and the planning lock that lets one process at a time decide what to enqueue.

Reliability (docs/reliability.md): a worker's storage rides out an outage (outage.py), and a trial whose worker is
gone is failed and queued again (lost.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy.engine
import sqlalchemy.event
import sqlalchemy.exc
import sqlalchemy.pool
from optuna.storages import RDBStorage
from optuna.study import StudyDirection

from nas20k.base.errors import UserError
from nas20k.base.optuna_private import check_schema
from nas20k.readers.record import CONFIRM_SUFFIX

STUDIES_DIR = Path("studies")
SCHEMES = ("sqlite", "postgresql", "mysql")
LOCK_SUFFIX = ":planning"  # exists only while one process enqueues trials (warm start, retries, confirmations)


class StorageError(UserError):
    """The storage cannot be used (malformed or unreachable URL, missing study); one readable line."""


def default_storage(study_name: str) -> str:
    return f"sqlite:///{STUDIES_DIR / study_name}.db"


def default_artifacts(storage_url: str, study_name: str) -> Path:
    """Next to the SQLite file (so a study folder is self-contained), else studies/ of this folder."""
    path = _sqlite_file(storage_url)
    return (path.parent if path is not None else STUDIES_DIR) / f"{study_name}-artifacts"


def redact(url: str) -> str:
    """The URL with its password as ***: the one form in which nas20k prints, logs or records a storage URL
    (SQLAlchemy's own rendering; a URL it cannot parse keeps only its scheme)."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return url if "@" not in url else f"{url.split('://', 1)[0]}://***" if "://" in url else "***"


def runnable(url: str) -> str:
    """The URL as a hint can show it for the user to run: without its password, which libpq then takes from
    PGPASSWORD or ~/.pgpass (`redact`'s *** would be sent as the password)."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return redact(url)
    if not parsed.password:
        return url
    bare = sqlalchemy.engine.URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port,
                                        parsed.database, parsed.query)
    return bare.render_as_string(hide_password=False)


def _scheme(url: str) -> str:
    """The database of a storage URL without its driver: postgresql+psycopg://... -> postgresql."""
    return url.split(":", 1)[0].split("+", 1)[0]


def _no_prepared_statements(url: str) -> dict:
    """psycopg 3 (what postgresql:// means to SQLAlchemy 2.1) prepares a query on the server after 5 runs; a pooler
    in transaction mode (PgBouncer < 1.21, docs/reliability.md) hands the next transaction another server
    connection, which lacks it ("prepared statement ... does not exist"). Optuna's queries are short: none is
    prepared."""
    try:
        driver = sqlalchemy.engine.make_url(url).get_driver_name()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError):
        return {}
    return {"prepare_threshold": None} if driver == "psycopg" else {}


def _sqlite_file(url: str) -> Path | None:
    """The database file of a sqlite:/// URL, else None."""
    return Path(url.split("///", 1)[-1]) if _scheme(url) == "sqlite" else None


def open_storage(url: str, heartbeat: int | None = None, patience: float | None = None, label: str = "",
                 wait_to_open: bool = True, connections: int | None = None) -> RDBStorage:
    """An RDB storage (SQLite file or PostgreSQL/MySQL server) with heartbeats and retry of dead workers' trials.
    With `patience` (a worker's, --storage-patience), its calls ride out an outage of up to that many seconds,
    opening too unless not `wait_to_open` (a command's first contact: a URL that never answered is more likely a
    typo than an outage, so only a full server is waited for); without, a connection error fails at once, as does
    any error that is not a lost connection (bad credentials, a missing database).

    A server storage holds at most `connections` connections (SQLAlchemy's pool, no overflow; a thread that finds
    them busy waits its turn): by default 2 with heartbeats (a worker's trials and its heartbeat), 1 without (a
    command that reads an existing study), so many machines fit one server (docs/reliability.md)."""
    if "://" not in url or _scheme(url) not in SCHEMES:
        raise StorageError(f"malformed storage URL {redact(url)!r}: expected sqlite:///path/to/file.db or postgresql://user:password@host/dbname")
    if (path := _sqlite_file(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Several local workers write to one file: wait for the lock instead of failing. isolation_level None
        # hands transactions to SQLAlchemy, which `_serialize_sqlite` makes begin with the write lock.
        engine_kwargs = {"connect_args": {"timeout": 60, "isolation_level": None}}
    else:
        engine_kwargs = {"connect_args": {"connect_timeout": 10, **_no_prepared_statements(url)},
                         "pool_pre_ping": True, "pool_size": connections or (2 if heartbeat else 1), "max_overflow": 0}
    from nas20k.runner.lost import RequeueLostTrial  # both import this module for its names
    from nas20k.runner.outage import Outage, StorageUnavailable, server_full

    outage = Outage(redact(url), patience, label)
    opener = outage if wait_to_open else Outage(redact(url), patience, label, retry_if=server_full)
    for attempt in range(5):
        try:
            storage = opener.call(
                _built,
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat if heartbeat else None,
                heartbeat_stale_trial_callback=RequeueLostTrial() if heartbeat else None,
            )
            storage.outage = outage
            if path is not None:
                _serialize_sqlite(storage.engine)
            return storage
        except StorageUnavailable:
            raise
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
    raise StorageError(f"cannot open storage {redact(url)}: {detail}") from error


def _built(url: str, **kwargs: object) -> RDBStorage:
    """PatientStorage(url, ...) with its schema checked one connection at a time (`check_schema`), or ServerFull if
    the server had no slot for it. A refused connection leaves the half-built storage's pool holding the ones it
    had for as long as the error's traceback lives, so a process waiting for a slot would keep one (seen: 8
    processes on a 20-slot server starved each other): the traceback is dropped and the pool collected first."""
    import gc

    from nas20k.runner.outage import PatientStorage, ServerFull, server_full

    try:
        if kwargs["engine_kwargs"].get("pool_size") == 1 and not _set_up(url, kwargs["engine_kwargs"]):
            RDBStorage(url, engine_kwargs={**kwargs["engine_kwargs"], "pool_size": 2}).engine.dispose()
        storage = PatientStorage(url, skip_compatibility_check=True, **kwargs)
        check_schema(storage)
        return storage
    except Exception as e:  # noqa: BLE001 - sorted below, raised again
        if not server_full(e):
            raise
        full = ServerFull(str(e.__cause__ or e).strip().splitlines()[0])
    gc.collect()
    raise full


def _set_up(url: str, engine_kwargs: dict) -> bool:
    """Whether Optuna has set the server's database up (its schema version stamped). Optuna sets up a fresh one
    holding one connection while it opens another: a storage of one connection (a reader, a parent of worker
    processes) would wait for itself, so a storage of two sets it up first, closed at once."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                      connect_args=engine_kwargs.get("connect_args", {}))
    try:
        with engine.connect() as c:
            return c.exec_driver_sql("SELECT version_num FROM alembic_version").first() is not None
    except sqlalchemy.exc.ProgrammingError:  # no such table
        return False
    finally:
        engine.dispose()


def _serialize_sqlite(engine: sqlalchemy.engine.Engine) -> None:
    """Make every transaction on a SQLite file take the write lock when it begins (SQLAlchemy's recipe for
    serializable SQLite). Optuna moves a queued trial to RUNNING by reading its state and then writing it,
    relying on SELECT ... FOR UPDATE, which SQLite ignores: two workers could both take the same queued trial
    (seen in CI: a warm-start trial trained twice, the second worker crashed telling a COMPLETE trial)."""
    sqlalchemy.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))


def load_study(url: str, study_name: str, storage: RDBStorage | None = None) -> optuna.Study:
    """An existing study, read-only use (best, trials, report, export, confirm), on `storage` if given (a storage
    of `url` the command opened already: one connection, not one per study)."""
    if (path := _sqlite_file(url)) is not None and not path.is_file():  # opening would create it
        raise StorageError(f"no study database at {path}; "
                           "run `nas20k search` (with the same --study-name / --storage) first")
    storage = storage or open_storage(url)
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name not in names:
        shown = [n for n in names if not n.endswith((CONFIRM_SUFFIX, LOCK_SUFFIX))]
        have = f"; it holds: {', '.join(shown)}" if shown else ""
        raise StorageError(f"no study named {study_name!r} in {redact(url)}{have}; run `nas20k search` first")
    return optuna.load_study(study_name=study_name, storage=storage)


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
