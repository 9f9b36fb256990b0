"""A search survives Ctrl-C, a SIGKILLed worker, and shares a study with other workers (SQLite and PostgreSQL)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import DATA_DIR, nas20k
from nas20k.study import status

LONGER = ["--limit", "3000", "--val-size", "500", "--max-epochs", "3"]  # trials long enough to be caught mid-training


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "NAS20K_DATA_DIR": str(DATA_DIR)}
    return subprocess.Popen([sys.executable, "-m", "nas20k", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def query(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def training_now(db: Path) -> list[int]:
    return [n for (n,) in query(db, """select t.number from trials t join trial_user_attributes a on a.trial_id = t.trial_id
                                       where t.state = 'RUNNING' and a.key = 'status' and a.value_json = '"training"'""")]


def wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"search ended early: {proc.communicate()}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def load(cwd: Path) -> optuna.Study:
    return optuna.load_study(study_name="nas20k", storage=f"sqlite:///{cwd}/studies/nas20k.db")


def trained(study: optuna.Study) -> int:
    return sum(status(t) in ("complete", "pruned", "diverged") for t in study.trials)


def test_ctrl_c_records_the_trial_and_the_study_resumes(tmp_path):
    args = ["search", "--trials", "3", *LONGER]
    proc = start(args, tmp_path)
    db = tmp_path / "studies" / "nas20k.db"
    wait_for(lambda: bool(query(db, "select 1 from trials where state = 'COMPLETE'")) and bool(training_now(db)), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: study 'nas20k' is saved" in err and "continue with: nas20k search --trials 3" in err
    assert "Traceback" not in err
    study = load(tmp_path)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert [t for t in study.trials if t.state == TrialState.FAIL]  # the interrupted trial, recorded as failed
    assert nas20k("best", cwd=tmp_path).returncode == 0
    r = nas20k(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert trained(load(tmp_path)) >= 3


def test_a_sigkilled_worker_leaves_no_zombie_and_its_trial_is_retried(tmp_path):
    args = ["search", "--trials", "3", "--heartbeat", "1", *LONGER]
    proc = start(args, tmp_path)
    db = tmp_path / "studies" / "nas20k.db"
    wait_for(lambda: bool(training_now(db)), proc)
    zombie = training_now(db)[0]
    proc.kill()
    proc.wait()
    assert training_now(db) == [zombie]  # killed mid-training: RUNNING in the database
    r = nas20k(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = load(tmp_path)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert study.trials[zombie].state == TrialState.FAIL
    assert any(t.system_attrs.get("failed_trial") == zombie for t in study.trials)  # retried with the same parameters
    assert trained(study) >= 3
    assert nas20k("best", cwd=tmp_path).returncode == 0


def test_two_workers_share_a_postgresql_study(tmp_path):
    url = os.environ.get("NAS20K_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide a PostgreSQL server in NAS20K_TEST_POSTGRES (.ci/run starts one)")
        pytest.skip("set NAS20K_TEST_POSTGRES=postgresql://user:pw@host/db to run against a real server (.ci/run does)")
    name = f"pg-{uuid.uuid4().hex[:8]}"
    args = ["search", "--trials", "6", *LONGER, "--max-epochs", "2", "--storage", url, "--study-name", name, "--artifacts", str(tmp_path / "artifacts")]
    machines = [tmp_path / "a", tmp_path / "b"]  # two working folders, as on two machines sharing the server
    procs = []
    for m in machines:
        m.mkdir()
        procs.append(start(args, m))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert 6 <= trained(study) <= 7
    workers = {t.user_attrs["worker"] for t in study.trials if status(t) in ("complete", "pruned", "diverged")}
    assert len(workers) == 2  # both contributed trained candidates
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
