"""Many search processes on one PostgreSQL study (docs/reliability.md, "Many machines on one study"): more than a
small server's max_connections fit wait their turn, and many more run through PgBouncer; every count exact.

Each process stands for a machine (its own working folder, 1 worker). The server's connections are counted from
the kernel's socket table (established TCP connections to its port), so counting takes no connection slot.
Run with `-s` to see the figures docs/reliability.md quotes."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from conftest import server_url, start, status, trained, wait_for
from optuna.trial import TrialState

from nas20k.runner.storage import load_study, open_storage

pytestmark = pytest.mark.slow  # many real processes against real servers

TRIALS = 40
ONE_EPOCH = ["--limit", "300", "--val-size", "100", "--max-epochs", "1", "--no-warm-start", "--confirm-top", "0",
             "--jobs", "1", "-q"]


def connections_to(port: int) -> int:
    """Established TCP connections whose local end is `port` on this host: a server's clients."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            count += state == "01" and int(local.rsplit(":", 1)[1], 16) == port
    return count


def server_facts(url: str) -> tuple[int, int]:
    """(max_connections, port) of the PostgreSQL server behind `url` (through a pooler: the server's own)."""
    with _connected(url) as c:
        return int(c.exec_driver_sql("SHOW max_connections").scalar()), int(c.exec_driver_sql(
            "SELECT inet_server_port()").scalar())


def study_exists(url: str, name: str) -> bool:
    """Asked in SQL: opening an Optuna storage on an empty database would set its schema up alongside the first
    search's."""
    with _connected(url) as c:
        try:
            row = c.execute(sqlalchemy.text("SELECT 1 FROM studies WHERE study_name = :n"), {"n": name}).first()
            return row is not None
        except sqlalchemy.exc.ProgrammingError:  # no tables yet
            return False


@contextlib.contextmanager
def _connected(url: str) -> Iterator[sqlalchemy.Connection]:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as c:
            yield c
    finally:
        engine.dispose()


@dataclass
class Drill:
    study: optuna.Study
    codes: list[int]
    errors: list[str]
    peak: int  # the server's connections at the peak
    wall: float


def drill(url: str, processes: int, tmp_path: Path) -> Drill:
    """`processes` searches of TRIALS 1-epoch trials on one new study; the first alone until the study exists (on a
    fresh database Optuna's schema set-up holds two connections at once, which a pooler's small pool may not give)."""
    _, port = server_facts(url)
    name = f"many-{uuid.uuid4().hex[:8]}"
    args = ["search", "--trials", str(TRIALS), *ONE_EPOCH, "--storage", url, "--study-name", name,
            "--artifacts", str(tmp_path / "artifacts")]
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], connections_to(port))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    began, procs = time.monotonic(), []
    for i in range(processes):
        (tmp_path / f"m{i}").mkdir()
        procs.append(start(args, tmp_path / f"m{i}"))
        if i == 0:
            wait_for(lambda: study_exists(url, name), procs[0], timeout=300)
    outputs = [p.communicate(timeout=1200) for p in procs]
    wall = time.monotonic() - began
    done.set()
    watcher.join()
    return Drill(load_study(url, name), [p.returncode for p in procs],
                 [err for _, err in outputs], peak[0], wall)


def check(d: Drill, processes: int) -> None:
    """All exit 0; exactly TRIALS trained, each once; nothing left running; nothing failed or retried."""
    statuses = [status(t) for t in d.study.trials]
    print(f"\n{processes} processes x 1 worker: exit codes {sorted(set(d.codes))}, trained {trained(d.study)}, "
          f"statuses { {s: statuses.count(s) for s in sorted(set(statuses))} }, peak server connections {d.peak}, "
          f"wall {d.wall:.0f} s")
    assert d.codes == [0] * processes, "\n".join(e for e, c in zip(d.errors, d.codes, strict=True) if c)
    assert trained(d.study) == TRIALS
    assert not [t for t in d.study.trials if t.state == TrialState.RUNNING]
    assert set(statuses) <= {"complete", "pruned", "diverged", "rejected", "surplus", "waiting"}, statuses
    # a queued design (a move) that came up surplus is queued again, for a resumed search: one per surplus at most
    assert statuses.count("waiting") <= statuses.count("surplus"), statuses
    numbers = [t.number for t in d.study.trials]
    assert len(numbers) == len(set(numbers))
    assert "Traceback" not in "".join(d.errors)


def test_more_processes_than_a_small_server_takes_wait_their_turn(tmp_path):
    url = server_url("NAS20K_TEST_POSTGRES_SMALL", "a PostgreSQL server started with max_connections = 20")
    limit, _ = server_facts(url)
    processes = 12  # 2 connections each while they train: 24, more than the slots a small server has
    assert 2 * processes > limit
    d = drill(url, processes, tmp_path)
    check(d, processes)
    waited = [e for e in d.errors if "database server full" in e]
    print(f"{len(waited)} of {processes} processes waited for a free connection")


def test_three_times_a_servers_limit_run_through_pgbouncer(tmp_path):
    url = server_url("NAS20K_TEST_PGBOUNCER", "PgBouncer (transaction pooling) in front of a PostgreSQL server")
    limit, _ = server_facts(url)
    processes = 3 * limit
    d = drill(url, processes, tmp_path)
    check(d, processes)
    assert d.peak <= limit


def test_a_reader_holds_one_server_connection_and_a_worker_two():
    """Optuna's own schema check would need two at once: a pool of one waited 30 s for itself (`check_schema`)."""
    url = server_url("NAS20K_TEST_POSTGRES", "a PostgreSQL server (postgresql://user:pw@host/db)")
    _, port = server_facts(url)
    before = connections_to(port)
    reader = open_storage(url)
    optuna.create_study(storage=reader, study_name=f"reader-{uuid.uuid4().hex[:8]}")
    assert connections_to(port) - before == 1
    worker = open_storage(url, heartbeat=10)
    threads = [threading.Thread(target=worker.get_all_studies) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert connections_to(port) - before <= 1 + 2
    reader.engine.dispose(), worker.engine.dispose()
