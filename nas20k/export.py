"""Hand the best trial over: weights from the artifact store, exported so plain torch can load it.

Selection is by validation score only (`study.best_trial`); test accuracy is carried along for the record.
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
from optuna.trial import FrozenTrial, TrialState

from nas20k.data import IMAGE_SIZE, MEAN, STD
from nas20k.factory import summary
from nas20k.objective import Budget, checklist
from nas20k.space import Candidate


class ExportError(RuntimeError):
    """Nothing to export, or nowhere to put it; one readable line."""


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The completed trial with the highest validation score (never test accuracy)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ExportError(f"study {study.study_name!r} has no completed trial yet; run `nas20k search` (or let it finish a trial) first")
    return study.best_trial


def study_budget(study: optuna.Study) -> Budget:
    return Budget(**study.user_attrs.get("budget", {}))


def trial_checklist(study: optuna.Study, trial: FrozenTrial) -> list[tuple[str, bool]]:
    candidate = Candidate.from_dict(trial.user_attrs["candidate"])
    return checklist(candidate.spec, trial.user_attrs["epochs"], trial.user_attrs.get("test_acc"), study_budget(study))


def load_model(trial: FrozenTrial, artifacts: Path) -> torch.nn.Module:
    """Rebuild the trial's model from its spec and load its saved weights (eval mode, CPU)."""
    candidate = Candidate.from_dict(trial.user_attrs["candidate"])
    model = candidate.spec.build()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        try:
            download_artifact(artifact_store=FileSystemArtifactStore(str(artifacts)), file_path=str(path), artifact_id=trial.user_attrs["weights"])
        except Exception as e:
            raise ExportError(f"weights of trial {trial.number} not found in {artifacts} ({e.__class__.__name__}); pass --artifacts where the search kept them") from e
        model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def metrics(study: optuna.Study, trial: FrozenTrial) -> dict:
    attrs = trial.user_attrs
    return {
        "study": study.study_name,
        "trial": trial.number,
        "params": attrs["params"],
        "macs": attrs["macs"],
        "epochs": attrs["epochs"],
        "val_score": trial.value,
        "val_acc": attrs["val_acc"],
        "test_acc": attrs.get("test_acc"),
        "seconds": attrs["seconds"],
        "mean": MEAN,
        "std": STD,
        "input_shape": [1, IMAGE_SIZE, IMAGE_SIZE],
        "train": attrs["candidate"]["train"],
        "checklist": {line: ok for line, ok in trial_checklist(study, trial)},
    }


def export(study: optuna.Study, trial: FrozenTrial, artifacts: Path, out: Path) -> list[Path]:
    """Write model.pt2 (torch.export, dynamic batch), model.pt, spec.json, metrics.json, summary.txt, history.csv
    (and model.onnx when onnx is installed) into `out`; returns the files written."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"cannot export into {out}: it is a file, not a folder")
    model = load_model(trial, artifacts)
    candidate = Candidate.from_dict(trial.user_attrs["candidate"])
    with tempfile.TemporaryDirectory() as tmp:  # write everything first, then move: a failure leaves `out` as it was
        stage = Path(tmp)
        example = torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        torch.export.save(program, stage / "model.pt2")
        torch.save(model.state_dict(), stage / "model.pt")
        (stage / "spec.json").write_text(candidate.spec.to_json() + "\n")
        m = metrics(study, trial)
        (stage / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
        checks = "\n".join(f"[{'x' if ok else ' '}] {line}" for line, ok in m["checklist"].items())
        (stage / "summary.txt").write_text(f"study {study.study_name}, trial {trial.number}\n{summary(candidate.spec)}\n{checks}\n")
        pd.DataFrame(trial.user_attrs["history"]).to_csv(stage / "history.csv", index=False)
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
