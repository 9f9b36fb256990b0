"""Hand a chosen trial over: its weights from the artifact store, exported so plain torch can load it."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact

from nas20k.core.data import IMAGE_SIZE, MEAN, STD
from nas20k.core.factory import summary
from nas20k.readers.record import StudyMeta, TrialRecord
from nas20k.readers.results import ExportError, record_checklist


def check_target(out: Path, study: str, storage: str, force: bool = False) -> None:
    """Refuse to write into a folder this study did not export to before (a committed result, another study's
    export, anything else), unless `force`: an export replaces files without asking."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"cannot export into {out}: it is a file, not a folder")
    if force or not out.exists() or not any(out.iterdir()):
        return
    try:
        previous = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        previous = {}
    if not isinstance(previous, dict) or (previous.get("study"), previous.get("storage")) != (study, storage):
        raise ExportError(f"{out} holds files this study did not export (a committed result or another export); "
                          "choose another folder, or pass --force to replace them")


MARKS = {True: "x", False: " ", None: "?"}  # a checklist line passed, failed, unconfirmed


def load_model(r: TrialRecord, artifacts: Path) -> torch.nn.Module:
    """Rebuild the trial's model from its spec and load its saved weights (eval mode, CPU)."""
    model = r.candidate.spec.build()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        try:
            download_artifact(artifact_store=FileSystemArtifactStore(str(artifacts)), file_path=str(path),
                              artifact_id=r.weights)
        except Exception as e:
            raise ExportError(f"weights of trial {r.number} not found in {artifacts} ({e.__class__.__name__}); "
                              "pass --artifacts where the search kept them") from e
        model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def metrics(study: str, storage: str, r: TrialRecord, meta: StudyMeta) -> dict:
    return {
        "study": study,
        "storage": storage,
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
        "seeds": [{"seed": s.seed, "val_score": s.val_score, "test_acc_last3": s.test_acc_last3, "run": s.source}
                  for s in r.seeds],
        "seconds": r.seconds,
        "mean": MEAN,
        "std": STD,
        "input_shape": [1, IMAGE_SIZE, IMAGE_SIZE],
        "train": r.candidate.train.to_dict(),
        "runtime": meta.runtime,
        "checklist": {line: ok for line, ok in record_checklist(r, meta)},
    }


def save_program(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """`model` as a torch.export program for any batch size (`example`: one batch of its input), loadable with
    plain `torch.export.load`."""
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, path)


def export(study: str, storage: str, r: TrialRecord, meta: StudyMeta, artifacts: Path, out: Path,
           force: bool = False) -> list[Path]:
    """Write model.pt2 (torch.export, dynamic batch), model.pt, spec.json, metrics.json, summary.txt, history.csv
    (and model.onnx when onnx is installed) into `out`; returns the files written. `storage` (password-free) names
    where the study lives, so a later export of the same study may replace this one and nothing else."""
    check_target(out, study, storage, force)
    model = load_model(r, artifacts)
    with tempfile.TemporaryDirectory() as tmp:  # write everything first, then move: a failure leaves `out` as it was
        stage = Path(tmp)
        example = torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE)
        save_program(model, example, stage / "model.pt2")
        torch.save(model.state_dict(), stage / "model.pt")
        (stage / "spec.json").write_text(r.candidate.spec.to_json() + "\n")
        m = metrics(study, storage, r, meta)
        (stage / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
        checks = "\n".join(f"[{MARKS[ok]}] {line}" for line, ok in m["checklist"].items())
        (stage / "summary.txt").write_text(f"study {study}, trial {r.number}\n{summary(r.candidate.spec)}\n{checks}\n")
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
    torch.onnx.export(model, (example,), str(path), dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), external_data=False, verbose=False)
