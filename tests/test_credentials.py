"""A storage password is never printed or stored: a real PostgreSQL search, its best, export, report and trials
CSV, given the URL by --storage or by NAS20K_STORAGE, and the password appears in no output, no file and no row of
the database; where the URL is shown, `***` stands for it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy
import sqlalchemy.pool
from conftest import SMALL, nas20k, server_url

pytestmark = pytest.mark.slow  # real processes against a real server


def database_text(url: str) -> str:
    """Every row of every table in the study's database (all studies, their trials and attributes), as text."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as c:
        tables = c.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").scalars().all()
        assert {"studies", "trials", "study_user_attributes", "trial_user_attributes"} <= set(tables)
        rows = [str(r) for t in tables for r in c.exec_driver_sql(f'SELECT t::text FROM "{t}" t').scalars()]
    engine.dispose()
    return "\n".join(rows)


def test_a_postgresql_password_is_never_printed_or_stored(tmp_path: Path):
    url = server_url("NAS20K_TEST_POSTGRES", "a PostgreSQL server (postgresql://user:pw@host/db)")
    password = sqlalchemy.engine.make_url(url).password
    assert password and len(password) >= 6, "the test needs a password that no other text contains"
    name = f"secret-{uuid.uuid4().hex[:8]}"
    common = ["--study-name", name, "--artifacts", str(tmp_path / "artifacts")]
    bare = url.replace(f":{password}@", "@")
    runs = [nas20k("search", "--trials", "2", *SMALL, "--no-warm-start", "--confirm-top", "1", "--confirm-seeds", "2",
                   "--storage", url, *common, cwd=tmp_path),
            nas20k("best", "--export", str(tmp_path / "export"), *common, cwd=tmp_path, env={"NAS20K_STORAGE": url}),
            nas20k("report", "--out", str(tmp_path / "report.html"), "--study-name", name, cwd=tmp_path,
                   env={"NAS20K_STORAGE": url}),
            nas20k("trials", "--csv", str(tmp_path / "trials.csv"), "--storage", url, "--study-name", name,
                   cwd=tmp_path),
            # the closing hint, as printed: the URL without its password, which libpq takes from PGPASSWORD
            nas20k("best", "--storage", bare, *common, cwd=tmp_path, env={"PGPASSWORD": password}),
            nas20k("best", "--storage", url.replace(password, "wrong-" + password[::-1]), "--study-name", name,
                   cwd=tmp_path)]
    for r in runs[:-1]:
        assert r.returncode == 0, r.stderr
    assert runs[-1].returncode == 1  # a wrong password: one error line, which shows the URL redacted
    shown = "\n".join(r.stdout + r.stderr for r in runs)
    assert f"--storage {bare}" in runs[0].stdout.replace("\n", "")  # the hint runs as shown (above)
    assert "***@" in shown  # the search header, the closing hint, the error line show where, without the password
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"report.html", "trials.csv", "metrics.json", "spec.json"} <= {p.name for p in files}
    leaks = [str(p) for p in files if password.encode() in p.read_bytes()]
    leaks += ["output"] if password in shown else []
    stored = database_text(url)
    assert name in stored  # what was searched is in there
    leaks += ["the database"] if password in stored else []
    assert not leaks, leaks
