"""Shared fixtures: real MNIST from ../shared/data (or $NAS20K_DATA_DIR), small subsets, one small study.

Commands run in-process through typer's CliRunner (`cli`) wherever a separate process adds nothing; the
tests of signals, killed workers and worker processes run the real command (`nas20k`, `start`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import optuna
import pytest
from typer.testing import CliRunner

from nas20k.core.data import Mnist, Split, load_mnist
from nas20k.readers.record import TrialRecord

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("NAS20K_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()
os.environ["NAS20K_DATA_DIR"] = str(DATA_DIR)  # in-process commands find the data through --data-dir's envvar
# the packaged zoo only: a developer's own zoo (~/.config/nas20k/zoo.json) must not change what a test's study queues
os.environ["NAS20K_ZOO"] = str(ROOT / "tests" / "no-user-zoo.json")
SMALL = ["--limit", "1500", "--val-size", "500", "--max-epochs", "1"]  # a search that trains in seconds
LONGER = ["--limit", "3000", "--val-size", "500", "--max-epochs", "3"]  # runs long enough to be caught mid-training
T = TypeVar("T")


def nas20k(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a new process in `cwd` (its studies/ folder is the default storage)."""
    full_env = {**os.environ, "NAS20K_DATA_DIR": str(DATA_DIR), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nas20k", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def server_url(var: str, what: str) -> str:
    """The URL of a real database server the test needs, from $`var`: CI must provide it (.ci/run starts each);
    elsewhere the test is skipped, saying what to set."""
    if url := os.environ.get(var):
        return url
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide {what} in {var} (.ci/run starts one)")
    pytest.skip(f"set {var} to the URL of {what} to run this test against it (.ci/run does)")


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """Start the CLI in the background (to signal or kill it)."""
    env = {**os.environ, "NAS20K_DATA_DIR": str(DATA_DIR), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "nas20k", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def cli(*args: str, cwd: Path, columns: int = 200):  # noqa: ANN201 - typer's Result
    """Run the CLI in this process, in `cwd`; returns typer's Result (exit_code, stdout, stderr, exception).

    The search installs its signal handling in the process that runs it: `restoring_signals` puts pytest's back."""
    here = os.getcwd()
    os.chdir(cwd)
    try:
        from nas20k.cli import app

        with restoring_signals():
            return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns), "NAS20K_DATA_DIR": str(DATA_DIR)})
    finally:
        os.chdir(here)


@contextlib.contextmanager
def restoring_signals() -> Iterator[None]:
    """Restore pytest's SIGINT/SIGTERM handlers and unraisable hook, which a search in this process replaces."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    try:
        yield
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        sys.unraisablehook = hook


def status(trial: optuna.trial.FrozenTrial) -> str:
    return TrialRecord.from_trial(trial).status


def load(cwd: Path, name: str = "nas20k") -> optuna.Study:
    """A study of the default storage under `cwd` (name "<search>:confirm" for its seed runs)."""
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/studies/nas20k.db")


def trained(study: optuna.Study) -> int:
    return sum(status(t) in ("complete", "pruned", "diverged") for t in study.trials)


def query(db: Path, sql: str, *params: object) -> list[tuple]:
    """Read the SQLite file directly (read-only): what a running search has written so far."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            return con.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def training_now(db: Path, study: str = "nas20k") -> list[int]:
    """Numbers of the trials of `study` that are RUNNING and inside their training loop."""
    return [n for (n,) in query(db, """select t.number from trials t join studies s on s.study_id = t.study_id
                                       join trial_user_attributes a on a.trial_id = t.trial_id
                                       where s.study_name = ? and t.state = 'RUNNING' and a.key = 'status'
                                       and a.value_json = '"training"'""", study)]


def wait_for(condition: Callable[[], T], *procs: subprocess.Popen, timeout: float = 240) -> T:
    """Poll `condition` until it returns something true, and return that: races are staged on what the code under
    test has done (a trial training, a thread waiting, a server answering), never on a fixed sleep. Fails at once
    if one of `procs` (anything with Popen's `poll` and `communicate`) has ended, else after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (held := condition()):
        for proc in procs:
            assert proc.poll() is None, f"the command ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s"
        time.sleep(0.05)
    return held


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist():
    """2,000 training, 500 validation and 2,000 test images of the real data."""
    return load_mnist(DATA_DIR, val_size=500, limit=2000, download=False)


def first(data: Mnist, n: int) -> Mnist:
    """`data` with only its first `n` training images: for the bf16 runs, which this CPU may only emulate (about 10x
    slower than fp32), and where a few batches already tell close from equal."""
    return Mnist(Split(data.train.x[:n], data.train.y[:n]), data.val, data.test)


@pytest.fixture(scope="session")
def small_study(tmp_path_factory) -> Path:
    """A folder holding a finished, unconfirmed 3-trial study (studies/nas20k.db + studies/nas20k-artifacts):
    the accuracy goal's two warm-start designs first (the zoo's `follows`), then one TPE sampled, all three completed
    (no pruner: at one epoch the default `asha` would prune on its first rung). Copy it (`study_copy`) before
    changing it."""
    cwd = tmp_path_factory.mktemp("study")
    r = cli("search", "--trials", "3", *SMALL, "--jobs", "1", "--confirm-top", "0", "--pruner", "none", "-q", cwd=cwd)
    assert r.exit_code == 0, r.output
    return cwd


@pytest.fixture()
def study_copy(small_study: Path, tmp_path: Path) -> Path:
    shutil.copytree(small_study / "studies", tmp_path / "studies")
    return tmp_path
