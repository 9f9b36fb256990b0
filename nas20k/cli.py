"""The `nas20k` command line (typer): train, search, best, trials, report, dashboard."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import optuna
import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nas20k.data import DataError, load_mnist
from nas20k.export import ExportError, best_trial, export, load_model, trial_checklist
from nas20k.factory import PRESETS, ArchSpec, SpecError, summary
from nas20k.objective import Budget
from nas20k.report import trials_frame, write_report
from nas20k.space import Candidate
from nas20k.study import PRUNERS, BudgetError, SearchSettings, StorageError, default_artifacts, default_storage, load_study, prepare, run_search, status
from nas20k.train import OPTIMIZERS, SCHEDULES, EpochStats, TrainConfig, evaluate, train

optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what happens to each trial
app = typer.Typer(
    help="Search small MNIST CNNs under a parameter and epoch budget (default: < 20,000 params, <= 20 epochs, >= 99.4 % test).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
if not out.is_terminal:  # logs and pipes: wide enough that tables stay readable
    out = Console(width=200)
err = Console(stderr=True, width=None if Console(stderr=True).is_terminal else 200)
USER_ERRORS = (DataError, SpecError, StorageError, ExportError, ValueError)

DataDir = Annotated[Path | None, typer.Option("--data-dir", envvar="NAS20K_DATA_DIR", help="Folder holding MNIST/raw/ (default: ~/.cache/nas20k, downloaded on first use).", show_default=False)]
Download = Annotated[bool, typer.Option(help="Download MNIST into the data folder when it is missing (needs internet).")]
ValSize = Annotated[int, typer.Option(help="Validation images carved (seeded) from the 60k training set; the only split used to choose models.")]
Limit = Annotated[int | None, typer.Option(help="Use only the first N training and test images (quick smoke runs).", show_default=False)]
StudyName = Annotated[str, typer.Option("--study-name", help="Name of the study inside the storage.")]
Storage = Annotated[str | None, typer.Option(help="Optuna storage URL, e.g. sqlite:///studies/x.db or postgresql://user:pw@host/db  [default: sqlite:///studies/<study-name>.db]", show_default=False)]
Artifacts = Annotated[Path | None, typer.Option(help="Folder for trial weights (share it between machines)  [default: studies/<study-name>-artifacts]", show_default=False)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def load_recipe(path: Path) -> TrainConfig:
    """A TrainConfig from JSON: either the config itself or a metrics.json holding it under "train"."""
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"recipe file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"recipe is not valid JSON: {path}: {e}") from None
    return TrainConfig.from_dict(d.get("train", d) if isinstance(d, dict) else {})


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.2%}"


def show_checklist(lines: list[tuple[str, bool]]) -> None:
    for line, ok in lines:
        out.print(f"  {'[green]✓[/green]' if ok else '[red]✗[/red]'} {line}", highlight=False)


@app.command("train")
def train_cmd(
    preset: Annotated[str | None, typer.Option(help=f"Architecture preset: {', '.join(PRESETS)}.", show_default=False)] = None,
    spec: Annotated[Path | None, typer.Option(help="Architecture as a spec JSON file (e.g. studies/best/spec.json).", show_default=False)] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 128,
    optimizer: Annotated[str, typer.Option(help=f"One of {', '.join(OPTIMIZERS)}.")] = "sgd",
    lr: Annotated[float, typer.Option(help="Peak learning rate (OneCycle's max; the start for step/none).")] = 0.05,
    nesterov: Annotated[bool, typer.Option(help="Nesterov momentum (SGD).")] = True,
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 5e-4,
    schedule: Annotated[str, typer.Option(help=f"LR schedule: {', '.join(SCHEDULES)}.")] = "onecycle",
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing.")] = 0.0,
    rotate: Annotated[float, typer.Option(help="Random rotation, +- degrees.")] = 10.0,
    translate: Annotated[float, typer.Option(help="Random shift, +- pixels.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for init, batch order and augmentation.")] = 0,
    compile: Annotated[bool, typer.Option(help="torch.compile the model (pays off only on long runs).")] = False,
    recipe: Annotated[Path | None, typer.Option(help="Take the training recipe from a JSON file instead (a search export's metrics.json, or a TrainConfig); the recipe flags above are then ignored, except --seed.", show_default=False)] = None,
    data_dir: DataDir = None,
    download: Download = True,
    val_size: ValSize = 5000,
    limit: Limit = None,
    quiet: Quiet = False,
) -> None:
    """Train one architecture (a preset or a spec file), then report its test accuracy."""
    try:
        if (preset is None) == (spec is None):
            raise ValueError("give exactly one of --preset NAME or --spec FILE")
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        arch = PRESETS[preset] if preset else ArchSpec.load(spec)
        arch.validate()
        cfg = TrainConfig(epochs, batch_size, optimizer, lr, 0.9, nesterov, weight_decay, schedule, label_smoothing, rotate, translate, seed, compile)
        if recipe is not None:
            cfg = replace(load_recipe(recipe), seed=seed)
        cfg.validate()
        if cfg.epochs > 1000:
            raise ValueError(f"--epochs must be <= 1000, got {cfg.epochs}")
        import torch

        data = load_mnist(data_dir, val_size=val_size, limit=limit, device="cuda" if torch.cuda.is_available() else "cpu", download=download)
    except USER_ERRORS as e:
        raise fail(str(e)) from None
    out.print(summary(arch), highlight=False)
    out.print(f"train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,} images on {data.train.x.device}", highlight=False)

    out.print(f"recipe: {json.dumps(cfg.to_dict())}", highlight=False, soft_wrap=True)

    def log(s: EpochStats) -> None:
        out.print(f"epoch {s.epoch:>3}/{cfg.epochs}  loss {s.train_loss:.4f}  train {pct(s.train_acc)}  val {pct(s.val_acc)}  lr {s.lr:.4g}  {s.seconds:.1f}s", highlight=False)

    result = train(arch, cfg, data, log, progress=not quiet)
    if result.status == "diverged":
        raise fail(f"diverged: the loss became NaN/inf in epoch {len(result.history) + 1}; lower --lr")
    total = sum(s.seconds for s in result.history)
    out.print(f"params {arch.num_params():,}  val {pct(result.history[-1].val_acc)}  test {pct(evaluate(result.model, data.test))}  ({total:.0f}s training)", highlight=False)


def _progress_printer(target: int, quiet: bool):  # noqa: ANN202
    """A callback for run_search: one line per finished trial, plus a live bar on a terminal."""
    seen: set[int] = set()
    bar = Progress(TextColumn("trained"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=out, disable=quiet or not out.is_terminal)
    task = bar.add_task("", total=target)
    bar.start()

    def update(trials: list) -> None:
        for t in trials:
            s = status(t)
            if t.number not in seen and s not in ("running", "waiting"):
                seen.add(t.number)
                a = t.user_attrs
                acc = f"val {pct(t.value)} test {pct(a.get('test_acc'))}" if s == "complete" else a.get("reason", "")
                params = f"{a['params']:,} params" if "params" in a else ""
                bar.console.print(f"trial {t.number:>3} {s:<9} {params:>14}  {acc}", highlight=False)
        counts = {k: sum(status(t) == k for t in trials) for k in ("complete", "pruned", "rejected", "diverged", "failed")}
        done = counts["complete"] + counts["pruned"] + counts["diverged"]
        best = max((t.value for t in trials if t.value is not None), default=None)
        running = ", ".join(f"#{t.number} ep {len(t.user_attrs.get('history', []))}" for t in trials if status(t) == "running")
        desc = f"best val {pct(best)} | pruned {counts['pruned']} rejected {counts['rejected']} diverged {counts['diverged']} failed {counts['failed']} | {running}"
        bar.update(task, completed=min(done, target), description=desc)

    return update, bar


def top_table(frame: pd.DataFrame, k: int) -> Table:
    table = Table(title=None)
    cols = ["trial", "status", "params", "epochs", "val_score", "val_acc", "test_acc", "seconds", "blocks", "head", "dropout", "optimizer", "lr", "batch_size", "schedule"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("status", "blocks", "head", "optimizer", "schedule") else "right")
    for _, row in frame.head(k).iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if pd.isna(v):
                cells.append("-")
            elif c in ("val_score", "val_acc", "test_acc"):
                cells.append(pct(v))
            elif c in ("lr", "dropout"):
                cells.append(f"{v:.3g}")
            elif c == "params":
                cells.append(f"{int(v):,}")
            else:
                cells.append(str(v))
        table.add_row(*cells)
    return table


@app.command()
def search(
    trials: Annotated[int, typer.Option(help="Trained candidates the study should hold (complete + pruned + diverged); rejected ones do not count. Re-running continues up to this number.")] = 50,
    max_params: Annotated[int, typer.Option(help="Parameter budget: candidates with this many parameters or more are rejected before training.")] = 20_000,
    max_epochs: Annotated[int, typer.Option(help="Epoch budget: every candidate trains at most this many epochs.")] = 20,
    pruner: Annotated[str, typer.Option(help=f"Early stopping of weak trials on validation accuracy: {', '.join(PRUNERS)} (asha: successive halving at epochs 1, 3, 9).")] = "asha",
    jobs: Annotated[int, typer.Option(help="Worker processes on this machine, sharing the study and the CPU threads.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the TPE sampler (offset per worker and by the trials already in the study) and of training.")] = 0,
    study_name: StudyName = "nas20k",
    storage: Storage = None,
    artifacts: Artifacts = None,
    heartbeat: Annotated[int, typer.Option(help="Seconds between worker heartbeats; a worker silent for twice this is declared dead and its trial retried.")] = 30,
    data_dir: DataDir = None,
    download: Download = True,
    val_size: ValSize = 5000,
    limit: Limit = None,
    quiet: Quiet = False,
) -> None:
    """Search architectures and training recipes with Optuna (TPE + pruning) under the budget; resumable."""
    settings = SearchSettings(
        study_name=study_name, storage=storage, artifacts=str(artifacts) if artifacts else None, trials=trials,
        budget=Budget(max_params, max_epochs), pruner=pruner, jobs=jobs, seed=seed,
        data_dir=str(data_dir) if data_dir else None, download=download, val_size=val_size, limit=limit, heartbeat=heartbeat,
    )
    try:
        study = prepare(settings)
    except USER_ERRORS as e:
        raise fail(str(e)) from None
    out.print(f"study {study_name!r} in {settings.storage_url}: searching until {trials} candidates are trained ({jobs} worker{'s' * (jobs > 1)}, pruner {pruner})", highlight=False)
    update, bar = _progress_printer(trials, quiet)
    try:
        run_search(settings, study, update)
    except KeyboardInterrupt:
        bar.stop()
        err.print(f"interrupted: study {study_name!r} is saved in {settings.storage_url}; continue with: {shlex.join(['nas20k', *sys.argv[1:]])}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except (RuntimeError, BudgetError) as e:
        bar.stop()
        raise fail(str(e)) from None
    bar.stop()
    frame = trials_frame(study).sort_values("val_score", ascending=False, na_position="last")
    out.print(top_table(frame[frame.status == "complete"], 10))
    names = f" --study-name {study_name}" if study_name != "nas20k" else ""
    names += f" --storage {storage}" if storage else ""
    out.print(f"next: nas20k best{names} --export   |   nas20k report{names}   |   nas20k dashboard{names}", highlight=False)


def _open(study_name: str, storage: str | None):  # noqa: ANN202
    return load_study(storage or default_storage(study_name), study_name)


@app.command()
def best(
    directory: Annotated[Path | None, typer.Argument(metavar="[DIR]", help="Export folder, with --export  [default: studies/best]", show_default=False)] = None,
    export_model: Annotated[bool, typer.Option("--export", help="Write model.pt2 (torch.export), model.pt, spec.json, metrics.json, summary.txt, history.csv (and model.onnx with the onnx extra) into DIR.")] = False,
    study_name: StudyName = "nas20k",
    storage: Storage = None,
    artifacts: Artifacts = None,
) -> None:
    """Show the best trial (by validation score), its layer table and the requirement checklist; optionally export it."""
    export_dir = (directory or Path("studies/best")) if export_model else None
    try:
        if directory is not None and not export_model:
            raise ValueError(f"{directory} is an export folder: add --export")
        if export_dir is not None and export_dir.exists() and not export_dir.is_dir():
            raise ExportError(f"cannot export into {export_dir}: it is a file, not a folder")
        study = _open(study_name, storage)
        trial = best_trial(study)
    except USER_ERRORS as e:
        raise fail(str(e)) from None
    a = trial.user_attrs
    candidate = Candidate.from_dict(a["candidate"])
    out.print(f"best trial #{trial.number} of study {study_name!r}: {a['params']:,} params, val score {pct(trial.value)} (final {pct(a['val_acc'])}), test {pct(a.get('test_acc'))}, {a['epochs']} epochs, {a['seconds']:.0f}s", highlight=False)
    out.print(f"spec:  {json.dumps(candidate.spec.to_dict())}", highlight=False, soft_wrap=True)
    out.print(f"train: {json.dumps(candidate.train.to_dict())}", highlight=False, soft_wrap=True)
    out.print(summary(candidate.spec), highlight=False)
    show_checklist(trial_checklist(study, trial))
    if export_dir is not None:
        try:
            files = export(study, trial, artifacts or default_artifacts(study_name), export_dir)
        except USER_ERRORS as e:
            raise fail(str(e)) from None
        out.print(f"exported to {export_dir}: {', '.join(f.name for f in files)}", highlight=False)


@app.command("trials")
def trials_cmd(
    top: Annotated[int | None, typer.Option(help="Show only the first K rows.", show_default=False)] = None,
    sort: Annotated[str, typer.Option(help="Column to sort by (descending for scores, ascending otherwise), e.g. val_score, params, trial, seconds.")] = "val_score",
    state: Annotated[str | None, typer.Option(help="Only trials in this status: complete, pruned, rejected, diverged, failed, running.", show_default=False)] = None,
    csv: Annotated[Path | None, typer.Option(help="Write all rows and columns to this CSV file.", show_default=False)] = None,
    study_name: StudyName = "nas20k",
    storage: Storage = None,
) -> None:
    """List the study's trials as a table: status, params, epochs, accuracies, seconds and main hyper-parameters."""
    try:
        study = _open(study_name, storage)
        frame = trials_frame(study)
        if sort not in frame.columns:
            raise ValueError(f"--sort must be one of {', '.join(frame.columns)}, got {sort!r}")
    except USER_ERRORS as e:
        raise fail(str(e)) from None
    if state:
        frame = frame[frame.status == state]
    frame = frame.sort_values(sort, ascending=sort not in ("val_score", "val_acc", "test_acc"), na_position="last")
    if csv:
        frame.to_csv(csv, index=False)
        out.print(f"wrote {len(frame)} rows to {csv}", highlight=False)
    out.print(top_table(frame, top or len(frame)))


@app.command()
def report(
    out_file: Annotated[Path, typer.Option("--out", help="HTML file to write (self-contained: opens offline).")] = Path("studies/report.html"),
    study_name: StudyName = "nas20k",
    storage: Storage = None,
) -> None:
    """Write one HTML page of plotly figures: history, accuracy vs params, learning curves, importances, summary."""
    try:
        if out_file.is_dir():
            raise ValueError(f"--out must be a file, but {out_file} is a folder")
        study = _open(study_name, storage)
    except USER_ERRORS as e:
        raise fail(str(e)) from None
    path = write_report(study, out_file)
    out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser", highlight=False)


@app.command()
def dashboard(
    host: Annotated[str, typer.Option(help="Interface to listen on (localhost: this machine only).")] = "localhost",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    study_name: StudyName = "nas20k",
    storage: Storage = None,
    artifacts: Artifacts = None,
) -> None:
    """Browse the study in optuna-dashboard: trials, learning curves, importances, saved weights."""
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    try:
        study = _open(study_name, storage)
    except USER_ERRORS as e:
        raise fail(str(e)) from None
    out.print(f"optuna-dashboard on http://{host}:{port} (Ctrl-C to stop)", highlight=False)
    run_server(study._storage, host=host, port=port, artifact_store=FileSystemArtifactStore(str(artifacts or default_artifacts(study_name))))


def main() -> None:
    app()
