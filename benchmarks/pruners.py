"""Which pruner finds a good candidate soonest without killing late bloomers? Side by side, on the same budget.

Each pruner gets its own study and the same compute: the search is stopped (SIGTERM, as `timeout` would) once its
finished trials have trained `--epochs` epochs in all (the epochs of trials still in flight at the stop are counted
in the table too). Counting epochs rather than seconds keeps the comparison fair when
something else shares the cores; the wall time is printed too. Per pruner: trained candidates, completed ones,
the epochs spent (and minutes) until the first completed candidate with val score >= --target, how many
optimizer/schedule families were trained and how many got past the first rung, and the best val score.

    python benchmarks/pruners.py --epochs 150 --out-dir studies/reference/pruners
    python benchmarks/pruners.py --smoke  # asha alone, until 1 epoch on 512 images, in a temporary folder: a test
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from nas20k.readers.record import TrialRecord, search_records

# epochs a candidate must finish before a verdict
FIRST_RUNG = {"asha": 1, "asha3": 3, "median": 5, "hyperband": 1, "none": 0}


def epochs_spent(db: Path, name: str) -> int:
    """Epochs trained by finished trials: so a stop always leaves at least one trial trained, however fast they run."""
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return sum(len(t.user_attrs.get("history", [])) for t in study.get_trials(deepcopy=False, states=done))
    except Exception:  # not created yet, or busy
        return 0


def run(pruner: str, args: argparse.Namespace) -> Path:
    """One search with `pruner`, stopped once its trials have trained `args.epochs` epochs; returns its database."""
    db, name = args.out_dir / f"pruners-{pruner}.db", f"pruners-{pruner}"
    cmd = [sys.executable, "-m", "nas20k", "search", "--trials", "1000", "--pruner", pruner, "--confirm-top", "0", "-q",
           "--max-params", str(args.max_params), "--max-epochs", str(args.max_epochs), "--study-name", name,
           "--storage", f"sqlite:///{db}", *(["--limit", str(args.limit)] if args.limit else [])]
    print(f"{pruner}: {' '.join(cmd[1:])}  (until {args.epochs} epochs)", flush=True)
    with (args.out_dir / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
        while proc.poll() is None and epochs_spent(db, name) < args.epochs:
            time.sleep(5)
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    return db


def summarize(pruner: str, db: Path, target: float) -> dict:
    study = optuna.load_study(study_name=f"pruners-{pruner}", storage=f"sqlite:///{db}")
    recs = search_records(study)
    epochs = sorted(h["at"] for r in recs for h in r.history)  # every trained epoch, in wall-clock order
    start = min(t.datetime_start.timestamp() for t in study.get_trials(deepcopy=False) if t.datetime_start)
    passing = [r.history[-1]["at"] for r in recs if r.val_score is not None and r.val_score >= target]
    first = min(passing, default=None)
    trained = [r for r in recs if r.trained]

    def family(r: TrialRecord) -> str:
        return f"{r.candidate.train.optimizer}/{r.candidate.train.schedule}"

    return {
        "pruner": pruner,
        "trained": len(trained),
        "complete": sum(r.status == "complete" for r in recs),
        "epochs": len(epochs),
        "minutes": (epochs[-1] - start) / 60 if epochs else 0.0,
        "first_epochs": None if first is None else sum(at <= first for at in epochs),
        "first_minutes": None if first is None else (first - start) / 60,
        "families": len({family(r) for r in trained}),
        "families_past_rung": len({family(r) for r in trained if r.epochs > FIRST_RUNG[pruner]}),
        "best_val": max((r.val_score for r in recs if r.val_score is not None), default=None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pruners", nargs="+", default=["asha", "asha3", "median"])
    parser.add_argument("--epochs", type=int, default=150, help="compute budget of each search, in trained epochs")
    parser.add_argument("--max-params", type=int, default=20_000)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only (a cheaper proxy)")
    parser.add_argument("--target", type=float, default=0.994, help="val score that counts as a good candidate")
    parser.add_argument("--out-dir", type=Path, default=Path("studies/pruners"))
    parser.add_argument("--summarize-only", action="store_true",
                        help="print the table of the databases already in --out-dir")
    parser.add_argument("--smoke", action="store_true", help="the smallest setting (a test): asha alone, until 1 "
                        "epoch, on 512 images, 2 epochs at most, in a temporary --out-dir unless given")
    args = parser.parse_args()
    temporary = args.smoke and args.out_dir == parser.get_default("out_dir")
    if args.smoke:
        args.pruners, args.epochs, args.limit, args.max_epochs = ["asha"], 1, 512, 2
        args.out_dir = Path(tempfile.mkdtemp(prefix="pruners-smoke-")) if temporary else args.out_dir
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for pruner in args.pruners:
        db = args.out_dir / f"pruners-{pruner}.db"
        if not args.summarize_only:
            db.unlink(missing_ok=True)
            run(pruner, args)
        rows.append(summarize(pruner, db, args.target))
    print(f"\n--epochs {args.epochs} each, --max-params {args.max_params} --max-epochs {args.max_epochs}"
          f"{f' --limit {args.limit}' if args.limit else ''}, default workers, target val score {args.target:.2%}\n")
    print("| pruner | trained | complete | epochs (min) | first val score >= target: epochs (min) "
          "| optimizer/schedule families trained (past first rung) | best val score |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        first = "not reached" if r["first_epochs"] is None else f"{r['first_epochs']} ({r['first_minutes']:.1f})"
        best = "-" if r["best_val"] is None else f"{r['best_val']:.2%}"
        print(f"| {r['pruner']} | {r['trained']} | {r['complete']} | {r['epochs']} ({r['minutes']:.1f}) | {first} "
              f"| {r['families']} ({r['families_past_rung']}) | {best} |")
    if temporary:
        shutil.rmtree(args.out_dir)


if __name__ == "__main__":
    main()
