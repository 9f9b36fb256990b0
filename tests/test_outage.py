"""A storage outage loses nothing (docs/reliability.md): storage calls ride out an outage of up to
--storage-patience seconds, and a trial whose worker is gone is retrained, never counted as running.

The fast tests drive the retry with a fake storage and a fake clock, and recovery on a SQLite file; the slow ones
restart a real PostgreSQL server (NAS20K_TEST_POSTGRES, .ci/run starts one) under the real CLI.
"""

import io
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy.exc
from conftest import start, status, trained
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from nas20k.runner.lost import MAX_RETRY, owner_name, recover_lost_trials
from nas20k.runner.outage import Outage, StorageUnavailable, gave_up, is_transient, patient, server_full
from nas20k.runner.storage import StorageError, open_storage, redact

# --- the retry, on a fake storage -------------------------------------------------------------------------------


def refused() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection failed: Connection refused"))


class FakeStorage:
    """Fails its first `failures` calls of get_trial with `error`, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def get_trial(self, trial_id: int) -> str:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        return f"trial {trial_id}"


def fake(failures: int, error: Exception, patience: float,
         retry_if: Callable[[BaseException], bool] = is_transient) -> tuple[FakeStorage, list[float], io.StringIO]:
    """A patient fake storage whose waits advance a fake clock (no real sleeping); its stderr lines."""
    now, slept, lines = [0.0], [], io.StringIO()

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    storage = patient(FakeStorage)(failures, error)
    storage.outage = Outage("postgresql://u:***@db/x", patience, retry_if=retry_if, sleep=sleep, clock=lambda: now[0],
                            stream=lines)
    return storage, slept, lines


def wrapped() -> StorageInternalError:
    """As Optuna raises it: `from` the SQLAlchemy error."""
    error = StorageInternalError("An exception is raised during the commit.")
    error.__cause__ = refused()
    return error


def broken_session() -> StorageInternalError:
    """Optuna's `_get_trials` retries a query that lost its connection on the same session: SQLAlchemy refuses."""
    try:
        try:
            raise refused()
        except sqlalchemy.exc.OperationalError:
            raise sqlalchemy.exc.PendingRollbackError("Can't reconnect until invalid transaction is rolled back")  # noqa: B904
    except sqlalchemy.exc.PendingRollbackError as e:
        error = StorageInternalError("An exception is raised during the commit.")
        error.__cause__ = e
        return error


@pytest.mark.parametrize("error", [refused(), wrapped(), broken_session()], ids=["operational", "wrapped", "session"])
def test_a_call_is_retried_with_backoff_until_the_storage_answers(error):
    storage, slept, lines = fake(3, error, patience=60)
    assert storage.get_trial(7) == "trial 7"
    assert storage.calls == 4 and slept == [0.5, 1.0, 2.0]
    said = lines.getvalue().splitlines()
    assert said == ["storage unreachable, retrying for up to 60 s: connection failed: Connection refused",
                    "storage back after 4 s"]


def test_an_error_that_is_not_transient_fails_at_once():
    integrity = sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))
    credentials = sqlalchemy.exc.OperationalError("connect", {}, Exception('password authentication failed for "x"'))
    for error in (integrity, credentials, ValueError("a bug")):
        storage, slept, lines = fake(1, error, patience=60)
        with pytest.raises(type(error)):
            storage.get_trial(1)
        assert storage.calls == 1 and not slept and not lines.getvalue()


def test_patience_zero_gives_up_at_once_with_one_line_and_stays_given_up():
    storage, slept, lines = fake(1, refused(), patience=0)
    with pytest.raises(StorageUnavailable) as e:
        storage.get_trial(1)
    assert str(e.value) == ("storage postgresql://u:***@db/x still unreachable after --storage-patience 0 s; stopped. "
                            "Rerun the same command once it is back: the trials that were training are retrained")
    assert not slept and not lines.getvalue()  # nothing waited, so no "retrying" line
    with pytest.raises(StorageUnavailable):  # the storage answers again, but this process has stopped trusting it
        storage.get_trial(1)
    assert storage.calls == 1


def test_past_the_window_the_call_gives_up():
    storage, slept, lines = fake(10**6, refused(), patience=30)
    with pytest.raises(StorageUnavailable):
        storage.get_trial(1)
    assert slept[:5] == [0.5, 1, 2, 4, 4] and max(slept) == 4 and sum(slept) == 30
    assert lines.getvalue().count("\n") == 1  # the "retrying" line; the give-up line is the command's


def too_many_clients(message: str = "FATAL:  sorry, too many clients already") -> StorageInternalError:
    """A full server, as Optuna's storage raises it when a session cannot get a connection."""
    error = StorageInternalError("An exception is raised during the commit.")
    error.__cause__ = sqlalchemy.exc.OperationalError("connect", {}, Exception(f"connection failed: {message}"))
    return error


def test_a_full_server_is_told_from_a_server_down():
    assert server_full(too_many_clients())
    assert server_full(too_many_clients("remaining connection slots are reserved for non-replication superuser "
                                        "connections"))
    assert server_full(too_many_clients("ERROR:  query_wait_timeout"))  # PgBouncer: no server connection came
    assert not server_full(refused()) and not server_full(wrapped())


def test_a_full_server_is_waited_for_and_past_the_patience_named_with_its_fixes():
    storage, slept, lines = fake(2, too_many_clients(), patience=60)
    assert storage.get_trial(3) == "trial 3"
    assert lines.getvalue().splitlines() == [
        "database server full (too many clients): waiting up to 60 s for a free connection", "storage back after 2 s"]
    storage, _, _ = fake(10**6, too_many_clients(), patience=5)
    with pytest.raises(StorageUnavailable) as e:
        storage.get_trial(3)
    assert "full (too many clients)" in str(e.value)
    assert all(fix in str(e.value) for fix in ("max_connections", "PgBouncer", "--jobs"))


def test_a_commands_first_contact_waits_for_a_full_server_only():
    """A URL that never answered is more likely a typo than an outage: refused at once; full: waited for."""
    storage, slept, _ = fake(1, refused(), patience=60, retry_if=server_full)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        storage.get_trial(1)
    assert not slept
    storage, slept, _ = fake(1, too_many_clients(), patience=60, retry_if=server_full)
    assert storage.get_trial(1) == "trial 1" and slept == [0.5]


def test_an_old_schema_is_named_with_its_fix(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    open_storage(url)
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'v3.0.0.a'")
    with pytest.raises(StorageError, match=r"schema v3\.0\.0\.a, .*optuna storage upgrade"):
        open_storage(url)


def test_a_storage_that_gives_up_inside_optunas_tell_is_recognised(tmp_path, monkeypatch):
    """Optuna 5.0.0's `_run_trial` turns the give-up into an UnboundLocalError ('updated_state')."""
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/s.db", patience=0))

    def down(*args: object, **kwargs: object) -> None:
        raise StorageInternalError("commit failed") from refused()

    def objective(trial: optuna.Trial) -> float:
        monkeypatch.setattr(RDBStorage, "set_trial_state_values", down)
        monkeypatch.setattr(RDBStorage, "get_trial", down)
        return 1.0

    with pytest.raises(Exception) as e:
        study.optimize(objective, n_trials=1)
    assert gave_up(e.value)


def test_a_tell_whose_commit_went_through_before_the_connection_broke_is_not_an_error(tmp_path, monkeypatch):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", patience=60)
    storage.outage = Outage("sqlite", 60, sleep=lambda s: None, stream=io.StringIO())
    study = optuna.create_study(storage=storage)
    told = RDBStorage.set_trial_state_values

    def commit_then_break(self, trial_id, state, values=None):  # noqa: ANN001, ANN202
        done = told(self, trial_id, state, values)
        if state.is_finished():
            monkeypatch.setattr(RDBStorage, "set_trial_state_values", told)
            raise StorageInternalError("commit failed") from refused()
        return done

    monkeypatch.setattr(RDBStorage, "set_trial_state_values", commit_then_break)
    study.optimize(lambda trial: 1.0, n_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE


# --- a trial whose worker is gone -------------------------------------------------------------------------------


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def running_trial(study: optuna.Study, owner: str, **attrs: object) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    trial.suggest_int("width", 4, 64)
    for key, value in {"worker": owner, "candidate": {"x": 1}, "status": "training", "history": [{}], **attrs}.items():
        trial.set_user_attr(key, value)
    return study.trials[trial.number]


def test_a_dead_workers_trial_is_failed_and_queued_again_at_once(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=60), direction="maximize")
    dead = running_trial(study, f"{socket.gethostname()}:{dead_pid()}", warm_start="firekind", prune_from=None)
    alive = running_trial(study, f"{socket.gethostname()}:{os.getppid()}")
    elsewhere = running_trial(study, f"another-host:{dead_pid()}")
    assert recover_lost_trials(study) == [dead.number]
    trials = study.trials
    assert trials[dead.number].state == TrialState.FAIL and trials[dead.number].user_attrs["status"] == "interrupted"
    assert "died (no such process) in epoch 2; queued again" in trials[dead.number].user_attrs["reason"]
    assert trials[alive.number].state == trials[elsewhere.number].state == TrialState.RUNNING
    (retry,) = [t for t in trials if t.state == TrialState.WAITING]
    assert retry.user_attrs == {"retry_of": dead.number, "warm_start": "firekind", "prune_from": None}  # no owner
    assert retry.system_attrs["fixed_params"] == dead.params and retry.system_attrs["failed_trial"] == dead.number
    assert recover_lost_trials(study) == []  # once


def test_another_hosts_trial_is_retried_once_its_heartbeat_is_stale_but_not_right_after_an_outage(tmp_path):
    db = tmp_path / "s.db"
    storage = open_storage(f"sqlite:///{db}", heartbeat=1, patience=60)
    study = optuna.create_study(storage=storage, direction="maximize")
    silent = running_trial(study, "another-host:1234")
    storage.record_heartbeat(silent._trial_id)
    with sqlite3.connect(db) as con:  # its host went down an hour ago
        con.execute("update trial_heartbeats set heartbeat = datetime('now', '-1 hour')")
    storage.outage.back_at = storage.outage._clock()  # this process has just seen the storage come back
    recover_lost_trials(study)
    assert study.trials[silent.number].state == TrialState.RUNNING  # its worker may be alive, and beat again soon
    storage.outage.back_at = None
    recover_lost_trials(study)
    lost = study.trials[silent.number]
    assert lost.state == TrialState.FAIL and lost.user_attrs["status"] == "interrupted"
    why = "worker another-host:1234 silent for more than 2 s (no heartbeat) in epoch 2; queued again"
    assert lost.user_attrs["reason"].startswith(why)
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.user_attrs == {"retry_of": silent.number} and retry.system_attrs["fixed_params"] == silent.params


def test_a_trial_popped_from_the_queue_is_owned_at_once(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=60, patience=60))
    study.enqueue_trial({"width": 8})
    assert study.ask().number == 0 and study.trials[0].user_attrs == {"worker": owner_name()}


def test_a_candidate_that_keeps_killing_its_worker_is_given_up(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=60), direction="maximize")
    for _ in range(MAX_RETRY + 1):
        retry_of = [t.number for t in study.trials if t.state == TrialState.FAIL][-1:]
        study.ask()  # pops the retry queued last time, if any
        trial = study.trials[-1]
        storage = study._storage
        storage.set_trial_user_attr(trial._trial_id, "worker", f"{socket.gethostname()}:{dead_pid()}")
        storage.set_trial_user_attr(trial._trial_id, "candidate", {"x": 1})
        assert trial.user_attrs.get("retry_of") == (retry_of[0] if retry_of else None)
        recover_lost_trials(study)
    last = study.trials[-1]
    assert last.user_attrs["status"] == "failed"
    assert f"its worker died {MAX_RETRY + 1} times" in last.user_attrs["reason"]
    assert not study.get_trials(states=(TrialState.WAITING,))


# --- a real PostgreSQL server, restarted and worse ------------------------------------------------------------

TINY = ["--limit", "1500", "--val-size", "500", "--max-epochs", "2", "--no-warm-start", "--confirm-top", "0", "-q"]


@pytest.fixture
def pg() -> str:
    url = os.environ.get("NAS20K_TEST_POSTGRES")
    missing = None if url else ("set NAS20K_TEST_POSTGRES=postgresql://user:pw@host/db to run against a real server "
                                "(.ci/run does)")
    if url and not (shutil.which("pg_ctlcluster") and Path("/etc/postgresql").is_dir()):
        missing = "restarting the server needs pg_ctlcluster (Debian's postgresql-common) on this machine"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide a local PostgreSQL server in NAS20K_TEST_POSTGRES (.ci/run starts one): "
                        f"{missing}")
        pytest.skip(missing)
    return url


def postgres(action: str) -> None:
    """Stop or start the server as an administrator does (stop -m fast: every connection dropped at once)."""
    version = sorted(os.listdir("/etc/postgresql"), key=float)[-1]  # as .ci/run picks it
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "pg_ctlcluster", version, "main", action, *(["-m", "fast"] if action == "stop" else [])],
                   check=True, timeout=120)


class Command:
    """The real CLI in the background, its output read as it comes (to wait for a line of it)."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = start(args, cwd)
        self.out: list[str] = []
        self.err: list[str] = []
        self.said = threading.Condition()
        self.readers = [threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
                        for pipe, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for r in self.readers:
            r.start()

    def _read(self, pipe: io.TextIOBase, lines: list[str]) -> None:
        for line in pipe:
            with self.said:
                lines.append(line)
                self.said.notify_all()

    def running(self) -> None:
        assert self.proc.poll() is None, f"the command ended early: {''.join(self.err)}"

    def until_said(self, text: str, timeout: float = 60) -> None:
        with self.said:
            self.said.wait_for(lambda: any(text in line for line in self.err) or self.proc.poll() is not None, timeout)
            assert any(text in line for line in self.err), f"no {text!r} in {''.join(self.err)!r}"

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        """Exit code and stderr, which must hold no traceback."""
        code = self.proc.wait(timeout)
        for r in self.readers:
            r.join(10)
        err = "".join(self.err)
        assert "Traceback" not in err, err
        return code, err


def restart_under(cmd: Command) -> None:
    """Restart the server under a running command: stopped until one of its workers has found it gone (a bare
    `pg_ctlcluster restart` is down for a fraction of a second, which the workers may never touch), then started."""
    postgres("stop")
    try:
        cmd.until_said("storage unreachable, retrying for up to")
    finally:
        postgres("start")


def pg_rows(url: str, sql: str, *params: object) -> list[tuple]:
    """Read the server directly; nothing while it is down."""
    try:
        with psycopg.connect(url, connect_timeout=5) as con:
            return con.execute(sql, params).fetchall()
    except psycopg.Error:
        return []


def trials_in(url: str, study: str, state: str, *statuses: str) -> list[tuple[int, str]]:
    """(number, worker) of the trials of `study` in `state` (and with one of `statuses` in user attr status)."""
    rows = pg_rows(url, """
        select t.number, w.value_json, s.value_json from trials t join studies st on st.study_id = t.study_id
        left join trial_user_attributes w on w.trial_id = t.trial_id and w.key = 'worker'
        left join trial_user_attributes s on s.trial_id = t.trial_id and s.key = 'status'
        where st.study_name = %s and t.state = %s""", study, state)
    return [(n, w) for n, w, s in rows if not statuses or s in {f'"{x}"' for x in statuses}]


def some_trained(url: str, study: str) -> bool:
    return bool(trials_in(url, study, "COMPLETE") or trials_in(url, study, "PRUNED", "pruned", "diverged"))


def until(condition, *cmds: Command, timeout: float = 240) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while not condition():
        for c in cmds:
            c.running()
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_search_rides_out_a_server_restart(pg, tmp_path):
    name = f"outage-{uuid.uuid4().hex[:8]}"
    # --heartbeat 1: the heartbeats meet the outage at once, and every trial looks stale right after it.
    args = ["search", "--trials", "6", *TINY, "--jobs", "2", "--heartbeat", "1", "--storage", pg, "--study-name", name]
    cmd = Command(args, tmp_path)
    until(lambda: some_trained(pg, name) and trials_in(pg, name, "RUNNING", "training"), cmd)
    restart_under(cmd)
    code, err = cmd.finish()
    assert code == 0, err
    assert "storage back after" in err
    study = optuna.load_study(study_name=name, storage=pg)
    assert 6 <= trained(study) <= 7
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.FAIL)]  # none lost, none failed


@pytest.mark.slow
def test_an_outage_past_the_patience_stops_the_run_in_one_line_and_the_rerun_finishes_it(pg, tmp_path):
    name = f"patience-{uuid.uuid4().hex[:8]}"
    args = ["search", "--trials", "4", *TINY, "--jobs", "2", "--heartbeat", "1", "--storage-patience", "3",
            "--storage", pg, "--study-name", name]
    cmd = Command(args, tmp_path)
    until(lambda: some_trained(pg, name) and trials_in(pg, name, "RUNNING", "training"), cmd)
    postgres("stop")
    try:
        code, err = cmd.finish()
    finally:
        postgres("start")
    assert code == 1, err
    # each worker, and the command's own reader of the study, say when they wait
    assert [line for line in err.splitlines() if not line.startswith(("worker ", "search: "))] == [
        f"error: storage {redact(pg)} still unreachable after --storage-patience 3 s; stopped. "
        "Rerun the same command once it is back: the trials that were training are retrained"]
    left = [n for n, _ in trials_in(pg, name, "RUNNING")]  # the stopped workers' trials: no one to say otherwise
    training = {n for n, _ in trials_in(pg, name, "RUNNING", "training")}
    assert left
    code, err = Command(args, tmp_path).finish()
    assert code == 0, err
    study = optuna.load_study(study_name=name, storage=pg)
    assert 4 <= trained(study) <= 5 and not [t for t in study.trials if t.state == TrialState.RUNNING]
    for n in left:
        assert status(study.trials[n]) == "interrupted"
        assert "died (no such process)" in study.trials[n].user_attrs["reason"]
        if "candidate" in study.trials[n].user_attrs:  # drawn: its candidate is queued again
            (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == n]
            assert retry.params == study.trials[n].params
            if n in training:  # one stopped while being rejected (over the budget) is rejected again, at no cost
                assert status(retry) in ("complete", "pruned", "diverged")


@pytest.mark.slow
def test_a_killed_workers_trial_is_retrained_by_a_rerun_at_once(pg, tmp_path):
    name = f"kill-{uuid.uuid4().hex[:8]}"
    # --heartbeat 60: its trial would be stale after 120 s; the run must not wait for that.
    args = ["search", "--trials", "6", *TINY, "--jobs", "2", "--heartbeat", "60", "--storage", pg, "--study-name", name]
    first = Command(args, tmp_path)
    until(lambda: trials_in(pg, name, "RUNNING", "training"), first)
    number, worker = trials_in(pg, name, "RUNNING", "training")[0]
    pid = int(worker.strip('"').rpartition(":")[2])
    assert pid != first.proc.pid  # a worker process, not the command
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    again = Command(args, tmp_path)  # at once: its heartbeat is still fresh
    code, err = first.finish()
    assert code == 1 and "exited with code -9" in err, err
    code, err = again.finish()
    assert code == 0, err
    study = optuna.load_study(study_name=name, storage=pg)
    lost = study.trials[number]
    assert lost.state == TrialState.FAIL and status(lost) == "interrupted" and "died" in lost.user_attrs["reason"]
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == number]  # queued once, by whoever found it
    assert retry.params == lost.params and status(retry) in ("complete", "pruned", "diverged")
    assert retry.datetime_start.timestamp() - killed < 60  # found by its dead process, not by its heartbeat
    assert 6 <= trained(study) <= 7
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


@pytest.mark.slow
def test_a_confirmation_rides_out_a_server_restart(pg, tmp_path):
    name = f"confirm-{uuid.uuid4().hex[:8]}"
    where = ["--storage", pg, "--study-name", name]
    # --limit 3000: a run that trains for a few seconds, for the outage to land in (confirm takes the search's split)
    search = Command(["search", "--trials", "1", *TINY, "--limit", "3000", "--max-epochs", "3", "--jobs", "1", *where],
                     tmp_path)
    code, err = search.finish()
    assert code == 0, err
    cmd = Command(["confirm", "--top", "1", "--seeds", "2", "--limit", "3000", "--val-size", "500", "--jobs", "1",
                   "--heartbeat", "1", "-q", *where], tmp_path)
    until(lambda: trials_in(pg, name + ":confirm", "RUNNING", "training"), cmd)
    restart_under(cmd)
    code, err = cmd.finish()
    assert code == 0, err
    assert "storage back after" in err
    runs = optuna.load_study(study_name=name + ":confirm", storage=pg).trials
    assert [status(t) for t in runs] == ["complete"]
