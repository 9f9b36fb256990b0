"""Shared fixtures: real MNIST from ../shared/data (or $NAS20K_DATA_DIR), small subsets, one small study."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nas20k.data import load_mnist

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("NAS20K_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()
SMALL = ["--limit", "1500", "--val-size", "500", "--max-epochs", "1"]  # a search that trains in seconds


def nas20k(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in `cwd` (its studies/ folder is the default storage)."""
    full_env = {**os.environ, "NAS20K_DATA_DIR": str(DATA_DIR), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nas20k", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist():
    """2,000 training, 500 validation and 2,000 test images of the real data."""
    return load_mnist(DATA_DIR, val_size=500, limit=2000, download=False)


@pytest.fixture(scope="session")
def small_study(tmp_path_factory) -> Path:
    """A folder holding a finished 3-trial study (studies/nas20k.db + weights); copy it before changing it."""
    cwd = tmp_path_factory.mktemp("study")
    r = nas20k("search", "--trials", "3", *SMALL, "-q", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return cwd


@pytest.fixture()
def study_copy(small_study: Path, tmp_path: Path) -> Path:
    shutil.copytree(small_study / "studies", tmp_path / "studies")
    return tmp_path
