"""The shared command line of the benchmarks that read committed studies, no training (rung_replay.py,
screening.py): SQLite study files as arguments, or --smoke for one small committed study; and the search studies
in them (their `:confirm` siblings left out)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import optuna

from nas20k.readers.record import CONFIRM_SUFFIX

SMOKE_DB = Path(__file__).resolve().parents[1] / "studies" / "reference" / "smallest-992.db"


def parse_study_files(doc: str) -> list[Path]:
    """The study files the command names, or SMOKE_DB with --smoke (a test)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("dbs", nargs="*", type=Path, help="SQLite study files")
    ap.add_argument("--smoke", action="store_true", help=f"the smallest setting (a test): {SMOKE_DB.name} unless given")
    args = ap.parse_args()
    if args.smoke and not args.dbs:
        args.dbs = [SMOKE_DB]
    if not args.dbs:
        ap.error("give at least one SQLite study file (or --smoke)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return args.dbs


def search_studies(dbs: list[Path]) -> Iterator[tuple[Path, optuna.Study]]:
    """(file, study) for every search study in the files, in order."""
    for db in dbs:
        storage = f"sqlite:///{db}"
        for name in optuna.get_all_study_names(storage):
            if not name.endswith(CONFIRM_SUFFIX):
                yield db, optuna.load_study(study_name=name, storage=storage)
