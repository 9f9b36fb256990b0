"""Choose a trial and hand it over: weights from the artifact store, exported so plain torch can load it.

Selection reads validation only: the mean val score over a candidate's seeds (its own score until it is
confirmed). Test accuracy is carried along for the record.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact

from nas20k.data import IMAGE_SIZE, MEAN, STD
from nas20k.errors import UserError
from nas20k.factory import summary
from nas20k.objective import Budget, Goal, checklist
from nas20k.record import SCORE_EPOCHS, TrialRecord
from nas20k.study import search_records

CONFIRMED = 2  # seeds a candidate needs before `best --smallest` trusts its mean


class ExportError(UserError):
    """Nothing to export, or nowhere to put it; one readable line."""


def study_budget(study: optuna.Study) -> Budget:
    return Budget(**study.user_attrs.get("budget", {}))


def study_goal(study: optuna.Study) -> Goal:
    return Goal(**study.user_attrs.get("goal", {}))


def ranked(recs: list[TrialRecord]) -> list[TrialRecord]:
    """Completed trials, best first by mean val score over their seeds; more seeds first among equals."""
    complete = [r for r in recs if r.status == "complete" and r.val_score is not None]
    return sorted(complete, key=lambda r: (-r.mean_val(), -r.n_seeds, r.number))


def best_record(study: optuna.Study) -> TrialRecord:
    """The completed trial with the highest mean val score (never test accuracy)."""
    best = ranked(search_records(study))
    if not best:
        raise ExportError(f"study {study.study_name!r} has no completed trial yet; run `nas20k search` (or let it finish a trial) first")
    return best[0]


def smallest_record(study: optuna.Study, target: float) -> TrialRecord:
    """The fewest-parameter trial whose confirmed (>= 2 seeds) mean val score reaches `target`."""
    passing = [r for r in ranked(search_records(study)) if r.n_seeds >= CONFIRMED and r.mean_val() >= target]
    if not passing:
        raise ExportError(f"study {study.study_name!r} has no candidate with a confirmed mean val score >= {target:.2%} "
                          f"(>= {CONFIRMED} seeds); run `nas20k confirm` on it, or search longer")
    return min(passing, key=lambda r: (r.params, -r.mean_val()))


def record_checklist(study: optuna.Study, r: TrialRecord) -> list[tuple[str, bool]]:
    """The mission's list; accuracy is the mean over seeds of each run's last-3-epoch test accuracy where known."""
    n = sum(s.test_acc_last3 is not None for s in r.seeds)
    label = f"test accuracy, mean of last {SCORE_EPOCHS} epochs over {n} seed{'s' * (n != 1)}" if n else "test accuracy"
    acc = r.mean_test_last3() if n else r.test_acc
    return checklist(r.candidate.spec, r.epochs, acc, study_budget(study), label)


def load_model(r: TrialRecord, artifacts: Path) -> torch.nn.Module:
    """Rebuild the trial's model from its spec and load its saved weights (eval mode, CPU)."""
    model = r.candidate.spec.build()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        try:
            download_artifact(artifact_store=FileSystemArtifactStore(str(artifacts)), file_path=str(path), artifact_id=r.weights)
        except Exception as e:
            raise ExportError(f"weights of trial {r.number} not found in {artifacts} ({e.__class__.__name__}); pass --artifacts where the search kept them") from e
        model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def metrics(study: optuna.Study, r: TrialRecord) -> dict:
    return {
        "study": study.study_name,
        "trial": r.number,
        "params": r.params,
        "macs": r.macs,
        "epochs": r.epochs,
        "val_score": r.val_score,
        "val_acc": r.last_val,
        "test_acc": r.test_acc,
        "mean_val_score": r.mean_val(),
        "sd_val_score": r.sd_val(),
        "mean_test_acc_last3": r.mean_test_last3(),
        "n_seeds": r.n_seeds,
        "seeds": [{"seed": s.seed, "val_score": s.val_score, "test_acc_last3": s.test_acc_last3, "run": s.source} for s in r.seeds],
        "seconds": r.seconds,
        "mean": MEAN,
        "std": STD,
        "input_shape": [1, IMAGE_SIZE, IMAGE_SIZE],
        "train": r.candidate.train.to_dict(),
        "checklist": {line: ok for line, ok in record_checklist(study, r)},
    }


def export(study: optuna.Study, r: TrialRecord, artifacts: Path, out: Path) -> list[Path]:
    """Write model.pt2 (torch.export, dynamic batch), model.pt, spec.json, metrics.json, summary.txt, history.csv
    (and model.onnx when onnx is installed) into `out`; returns the files written."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"cannot export into {out}: it is a file, not a folder")
    model = load_model(r, artifacts)
    with tempfile.TemporaryDirectory() as tmp:  # write everything first, then move: a failure leaves `out` as it was
        stage = Path(tmp)
        example = torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        torch.export.save(program, stage / "model.pt2")
        torch.save(model.state_dict(), stage / "model.pt")
        (stage / "spec.json").write_text(r.candidate.spec.to_json() + "\n")
        m = metrics(study, r)
        (stage / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
        checks = "\n".join(f"[{'x' if ok else ' '}] {line}" for line, ok in m["checklist"].items())
        (stage / "summary.txt").write_text(f"study {study.study_name}, trial {r.number}\n{summary(r.candidate.spec)}\n{checks}\n")
        pd.DataFrame(r.history).to_csv(stage / "history.csv", index=False)
        _export_onnx(model, example, stage / "model.onnx")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for f in sorted(stage.iterdir()):
            shutil.move(str(f), out / f.name)
            written.append(out / f.name)
    return written


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Only with the `onnx` extra installed; the .pt2 file is the primary format."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return
    torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), external_data=False, verbose=False)
