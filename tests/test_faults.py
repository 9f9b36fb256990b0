"""A search survives a SIGKILLed worker and shares a study with other workers (PostgreSQL).
Ctrl-C and SIGTERM: tests/test_signals.py."""

import uuid

import optuna
import pytest
from conftest import LONGER, cli, load, server_url, start, status, trained, training_now, wait_for
from optuna.trial import TrialState

pytestmark = pytest.mark.slow  # real processes and searches


def test_a_sigkilled_worker_leaves_no_zombie_and_its_trial_is_retried(tmp_path):
    args = ["search", "--trials", "1", "--heartbeat", "1", *LONGER, "--no-warm-start", "--confirm-top", "0",
            "--jobs", "1", "-q"]
    proc = start(args, tmp_path)
    db = tmp_path / "studies" / "nas20k.db"
    wait_for(lambda: bool(training_now(db)), proc)
    zombie = training_now(db)[0]
    proc.kill()
    proc.wait()
    assert training_now(db) == [zombie]  # killed mid-training: RUNNING in the database, nobody to say otherwise
    # its owner (host:pid) is a dead process on this host: the next run fails and retries it at once (lost.py)
    r = cli(*args, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    study = load(tmp_path)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert study.trials[zombie].state == TrialState.FAIL
    # retried once, same parameters
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == zombie]
    assert retry.params == study.trials[zombie].params and status(retry) == "complete"
    assert trained(study) == 1
    assert cli("best", cwd=tmp_path).exit_code == 0


def test_two_workers_share_a_postgresql_study(tmp_path):
    url = server_url("NAS20K_TEST_POSTGRES", "a PostgreSQL server (postgresql://user:pw@host/db)")
    name = f"pg-{uuid.uuid4().hex[:8]}"
    args = ["search", "--trials", "6", *LONGER, "--max-epochs", "2", "--storage", url, "--study-name", name,
            "--artifacts", str(tmp_path / "artifacts"), "--confirm-top", "0", "--jobs", "1", "-q"]
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
    assert len(workers) == 2  # both machines contributed trained candidates
    # queued once, by whoever came first
    starts = [t.user_attrs.get("warm_start") for t in study.trials]
    assert [starts.count(name) for name in ("nas20k-14838", "nas20k-16424")] == [1, 1] and starts.count(None) >= 4
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
