"""The wings' import contract (pyproject's [tool.importlinter], run by `lint-imports` in .ci/run) holds, and it
would catch an import back up: a copy of the package with one planted is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([*LINT, "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True)


def test_the_wings_import_downwards_only() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_planted_back_import_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "nas20k", tmp_path / "nas20k", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    factory = tmp_path / "nas20k" / "core" / "factory.py"
    factory.write_text(factory.read_text() + "\nfrom nas20k.runner import study  # noqa: E402, F401\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "nas20k.core.factory -> nas20k.runner.study" in result.stdout
