"""The `nas20k` command line (typer): train, search, confirm, best, trials, report, dashboard."""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import optuna
import pandas as pd
import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nas20k.data import load_mnist
from nas20k.errors import UserError
from nas20k.export import CONFIRMED, best_record, export, record_checklist, smallest_record, study_budget, study_goal
from nas20k.factory import PRESETS, ArchSpec, summary
from nas20k.objective import GOALS, TARGET_ACC, Budget, Goal
from nas20k.record import TrialRecord, records
from nas20k.report import trials_frame, write_report
from nas20k.runtime import Runtime, mps_running, pick_device
from nas20k.study import (DEFAULT_PRUNER, PRUNERS, BudgetError, SearchSettings, cpu_count, default_artifacts, default_storage,
                          WorkerError, load_study, plan_confirmations, prepare, run_workers, search_records,
                          trained_count)
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

DataDir = Annotated[Path | None, typer.Option("--data-dir", envvar="NAS20K_DATA_DIR", help="Folder holding MNIST/raw/ (default: ~/.cache/nas20k, downloaded on first use).", show_default=False)]
Download = Annotated[bool, typer.Option(help="Download MNIST into the data folder when it is missing (needs internet).")]
ValSize = Annotated[int, typer.Option(help="Validation images carved (seeded) from the 60k training set; the only split used to choose models.")]
Limit = Annotated[int | None, typer.Option(help="Use only the first N training and test images (quick smoke runs).", show_default=False)]
StudyName = Annotated[str, typer.Option("--study-name", help="Name of the study inside the storage.")]
Storage = Annotated[str | None, typer.Option(help="Optuna storage URL, e.g. sqlite:///studies/x.db or postgresql://user:pw@host/db  [default: sqlite:///studies/<study-name>.db]", show_default=False)]
Artifacts = Annotated[Path | None, typer.Option(help="Folder for trial weights (share it between machines)  [default: <study-name>-artifacts next to the SQLite file, else in studies/]", show_default=False)]
Device = Annotated[str, typer.Option(help="Where to train: auto (a GPU when CUDA is available, else the CPU), cpu, cuda or cuda:N.")]
CudaGraphs = Annotated[bool, typer.Option(help="On CUDA, capture the training step as a CUDA graph and replay it (--no-cuda-graphs: eager, as on the CPU).")]
Jobs = Annotated[int | None, typer.Option(help="Worker processes sharing the study. Default: one per CPU core with one thread each (2 workers measured 1.6x one on 2 cores), or 8 per GPU on CUDA (on an H200 with CUDA graphs: 2.5x the images of one worker under CUDA MPS, 0.89x without it; start MPS with nvidia-cuda-mps-control -d).", show_default=False)]
Heartbeat = Annotated[int, typer.Option(help="Seconds between worker heartbeats; a worker silent for twice this is declared dead and its trial retried.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def load_recipe(path: Path) -> TrainConfig:
    """A TrainConfig from JSON: either the config itself or a metrics.json holding it under "train"."""
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"recipe file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"recipe is not valid JSON: {path}: {e}") from None
    return TrainConfig.from_dict(d.get("train", d) if isinstance(d, dict) else d)


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
    drop_at: Annotated[float, typer.Option(help="Step schedule: the rate drops 10x after this fraction of the epochs.")] = 0.5,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing.")] = 0.0,
    rotate: Annotated[float, typer.Option(help="Random rotation, +- degrees.")] = 10.0,
    translate: Annotated[float, typer.Option(help="Random shift, +- pixels.")] = 1.0,
    recalibrate_bn: Annotated[bool, typer.Option(help="Before each evaluation, recompute BatchNorm's statistics on 10,000 clean training images with Dropout off (what test time sees).")] = True,
    seed: Annotated[int, typer.Option(help="Seed for init, batch order and augmentation.")] = 0,
    recipe: Annotated[Path | None, typer.Option(help="Take the training recipe from a JSON file instead (a search export's metrics.json, or a TrainConfig); the recipe flags above are then ignored, except --seed.", show_default=False)] = None,
    device: Device = "auto",
    cuda_graphs: CudaGraphs = True,
    compile: Annotated[bool, typer.Option(help="torch.compile the model (tens of seconds per architecture; pays off only on long runs).")] = False,
    data_dir: DataDir = None,
    download: Download = True,
    val_size: ValSize = 5000,
    limit: Limit = None,
    quiet: Quiet = False,
) -> None:
    """Train one architecture (a preset or a spec file), then report its test accuracy."""
    try:
        if (preset is None) == (spec is None):
            raise UserError("give exactly one of --preset NAME or --spec FILE")
        if preset is not None and preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        arch = PRESETS[preset] if preset else ArchSpec.load(spec)
        arch.validate()
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, nesterov=nesterov, weight_decay=weight_decay,
                          schedule=schedule, drop_at=drop_at, label_smoothing=label_smoothing, rotate=rotate, translate=translate, recalibrate_bn=recalibrate_bn, seed=seed)
        if recipe is not None:
            cfg = replace(load_recipe(recipe), seed=seed)
        cfg.validate()
        runtime = Runtime(device=str(pick_device(device)), compile=compile, cuda_graphs=cuda_graphs)
        data = load_mnist(data_dir, val_size=val_size, limit=limit, device=runtime.device, download=download)
        if cfg.batch_size > len(data.train):
            raise UserError(f"--batch-size {cfg.batch_size} is larger than the {len(data.train):,} training images")
    except UserError as e:
        raise fail(str(e)) from None
    out.print(summary(arch), highlight=False)
    out.print(f"train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,} images on {runtime.device}", highlight=False)
    out.print(f"recipe: {json.dumps(cfg.to_dict())}", highlight=False, soft_wrap=True)

    def log(s: EpochStats) -> None:
        out.print(f"epoch {s.epoch:>3}/{cfg.epochs}  loss {s.train_loss:.4f}  train {pct(s.train_acc)}  val {pct(s.val_acc)}  lr {s.lr:.4g}  {s.seconds:.1f}s", highlight=False)

    result = train(arch, cfg, data, log, runtime=runtime, progress=not quiet)
    if result.status == "diverged":
        raise fail(f"diverged: the loss became NaN/inf in epoch {len(result.history) + 1}; lower --lr")
    total = sum(s.seconds for s in result.history)
    out.print(f"params {arch.num_params():,}  val {pct(result.history[-1].val_acc)}  test {pct(evaluate(result.model, data.test))}  ({total:.0f}s training)", highlight=False)


def _running_line(recs: list[TrialRecord], epochs: int) -> str:
    """`#12 e3/20 40%` per running trial: the epoch it is in and how far into it, judged by its last epoch's time."""
    now, parts = time.time(), []
    for r in recs:
        if r.status != "running" or r.candidate is None:
            continue
        frac = f" {min(0.99, (now - r.history[-1]['at']) / r.history[-1]['seconds']):.0%}" if r.history and "at" in r.history[-1] else ""
        parts.append(f"#{r.number} e{min(len(r.history) + 1, epochs)}/{epochs}{frac}")
    return " ".join(parts)


def _progress_printer(target: int, epochs: int, quiet: bool, before: list, unit: str = "trained"):  # noqa: ANN202
    """A callback for run_workers: one line per trial that finishes from now on (`before`: the study's trials at the
    start, reported by earlier runs), plus a live line (<= 80 columns) on a terminal."""
    seen = {r.number for r in records(before) if r.status not in ("running", "waiting")}
    start, base = time.monotonic(), trained_count(before)
    bar = Progress(TextColumn(unit), BarColumn(bar_width=10), MofNCompleteColumn(), TextColumn("{task.description}"),
                   TimeElapsedColumn(), TextColumn("eta {task.fields[eta]}"), console=out, disable=quiet or not out.is_terminal)
    task = bar.add_task("", total=target, eta="-")
    bar.start()

    def update(trials: list) -> None:
        recs = records(trials)
        for t, r in zip(trials, recs):
            if t.number not in seen and r.status not in ("running", "waiting"):
                seen.add(t.number)
                if r.status == "complete":
                    text = f"val {pct(r.val_score)} test {pct(r.test_acc)}"
                else:
                    text = r.reason
                params = f"{r.params:,} params" if r.params is not None else ""
                label = f"seed {r.seed} of #{r.confirms}" if r.confirms is not None else (f"{r.warm_start} (warm start)" if r.warm_start else "")
                bar.console.print(f"trial {t.number:>3} {r.status:<11} {params:>14}  {text}  {label}".rstrip(), highlight=False)
        done = sum(r.trained for r in recs)
        best = max((r.val_score for r in recs if r.val_score is not None), default=None)
        bar.update(task, completed=min(done, target), description=f"best {pct(best)} {_running_line(recs, epochs)}"[:34], eta=_eta(start, done - base, target - base))

    return update, bar


def _eta(start: float, done: int, target: int) -> str:
    """Time left at the pace so far (the first trials run longest: nothing has pruned them yet, so this errs long)."""
    if done == 0 or done >= target:
        return "-"
    minutes = (time.monotonic() - start) / done * (target - done) / 60
    return f"~{minutes:.0f} min" if minutes < 120 else f"~{minutes / 60:.1f} h"


def top_table(frame: pd.DataFrame, k: int) -> Table:
    table = Table(title=None)
    cols = ["trial", "status", "params", "epochs", "val_score", "seeds", "mean_val", "sd_val", "test_last3", "seconds", "blocks", "head", "optimizer", "lr", "schedule"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("status", "blocks", "head", "optimizer", "schedule") else "right")
    for _, row in frame.head(k).iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if pd.isna(v):
                cells.append("-")
            elif c in ("val_score", "mean_val", "test_last3"):
                cells.append(pct(v))
            elif c == "sd_val":
                cells.append(f"{v * 100:.2f}")
            elif c == "lr":
                cells.append(f"{v:.3g}")
            elif c == "params":
                cells.append(f"{int(v):,}")
            else:
                cells.append(str(v))
        table.add_row(*cells)
    return table


def _show_ranked(study: optuna.Study, k: int) -> None:
    """The `k` best completed trials by mean val score over their seeds (more seeds first among equals)."""
    frame = trials_frame(search_records(study)).sort_values(["mean_val", "seeds"], ascending=False, na_position="last")
    out.print(top_table(frame[frame.status == "complete"], k))


def _names(study_name: str, storage: str | None) -> str:
    names = f" --study-name {study_name}" if study_name != "nas20k" else ""
    return names + (f" --storage {storage}" if storage else "")


def _interrupted(bar: Progress, settings: SearchSettings) -> typer.Exit:
    bar.stop()
    err.print(f"interrupted: study {settings.study_name!r} is saved in {settings.storage_url}; the interrupted trial is queued again, before any new sample; continue with: {shlex.join(['nas20k', *sys.argv[1:]])}", highlight=False, soft_wrap=True)
    return typer.Exit(130)


def _note_mps(device: torch.device, workers: int) -> None:
    """Several workers on a GPU without MPS take turns on it (`runtime.mps_running`): say so, and how to fix it."""
    if device.type == "cuda" and workers > 1 and not mps_running():
        out.print(f"note: CUDA MPS is not running, so the GPU time-slices between the {workers} workers (on an H200 8 workers trained "
                  "0.89x the images of one, 2.5x under MPS); start it with `nvidia-cuda-mps-control -d`, or pass --jobs 1", highlight=False)


def _confirm(settings: SearchSettings, top: int, seeds: int, quiet: bool) -> None:
    """Queue and run the seed confirmations of the top trials, then show them ranked by mean val score."""
    study, queued = plan_confirmations(settings, top, seeds)
    if queued:
        out.print(f"confirming the top {top} on {seeds} seeds each: {len(queued)} run(s) to train ({settings.workers} worker{'s' * (settings.workers > 1)})", highlight=False)
        before = study.get_trials(deepcopy=False)
        update, bar = _progress_printer(len(queued) + trained_count(before), settings.budget.max_epochs, quiet, before, unit="runs")
        try:
            run_workers(settings, study, "confirm", update)
        except KeyboardInterrupt:
            raise _interrupted(bar, settings) from None
        except WorkerError as e:
            bar.stop()
            raise fail(str(e)) from None
        bar.stop()
    else:
        out.print(f"the top {top} already have {seeds} seeds each (or all the study has)", highlight=False)


@app.command()
def search(
    trials: Annotated[int, typer.Option(help="Trained candidates the study should hold (complete + pruned + diverged); rejected ones do not count. Re-running continues up to this number.")] = 50,
    max_params: Annotated[int, typer.Option(help="Parameter budget: candidates with this many parameters or more are rejected before training.")] = 20_000,
    max_epochs: Annotated[int, typer.Option(help="Epoch budget: every candidate trains at most this many epochs.")] = 20,
    goal: Annotated[str, typer.Option(help=f"{' | '.join(GOALS)}: the highest val score, or the fewest parameters whose val score reaches --target.")] = "accuracy",
    target: Annotated[float, typer.Option(help="Val score a --goal smallest search must reach (val runs 0.1-0.3 points below test on this split).")] = TARGET_ACC,
    pruner: Annotated[str, typer.Option(help=f"Early stopping of weak trials on validation accuracy: {', '.join(PRUNERS)} (asha: successive halving at epochs 1, 3, 9; asha3: at 3 and 9; median: after 5 epochs; see the README's comparison).")] = DEFAULT_PRUNER,
    warm_start: Annotated[bool, typer.Option(help="Seed a new study with the public hand-tuned designs that fit the budget, so the first trained candidates are strong ones.")] = True,
    confirm_top: Annotated[int, typer.Option(help="After the search, retrain this many top candidates on more seeds (0: skip; `nas20k confirm` does it later).")] = 3,
    confirm_seeds: Annotated[int, typer.Option(help="Seeds each confirmed candidate ends with (its own run counts as one).")] = 3,
    jobs: Jobs = None,
    seed: Annotated[int, typer.Option(help="Seed of the TPE sampler (offset per worker and by the trials already in the study) and of training.")] = 0,
    device: Device = "auto",
    cuda_graphs: CudaGraphs = True,
    study_name: StudyName = "nas20k",
    storage: Storage = None,
    artifacts: Artifacts = None,
    heartbeat: Heartbeat = 30,
    data_dir: DataDir = None,
    download: Download = True,
    val_size: ValSize = 5000,
    limit: Limit = None,
    quiet: Quiet = False,
) -> None:
    """Search architectures and training recipes with Optuna (TPE + pruning) under the budget, then confirm the
    winners on more seeds; resumable (re-run the same command)."""
    settings = _settings(
        study_name=study_name, storage=storage, artifacts=artifacts, trials=trials,
        budget=Budget(max_params, max_epochs), goal=Goal(goal, target), pruner=pruner, jobs=jobs, seed=seed,
        warm_start=warm_start, device=device, cuda_graphs=cuda_graphs, data_dir=data_dir,
        download=download, val_size=val_size, limit=limit, heartbeat=heartbeat,
    )
    try:
        if confirm_top < 0 or confirm_seeds < 1:
            raise UserError("--confirm-top must be >= 0 and --confirm-seeds >= 1")
        study, queued = prepare(settings)
    except UserError as e:
        raise fail(str(e)) from None
    held = trained_count(study.get_trials(deepcopy=False))
    dev = pick_device(device)
    threads = max(1, cpu_count() // settings.workers) if dev.type == "cpu" else "-"
    if held >= trials:
        out.print(f"study {study_name!r} in {settings.storage_url} already holds {held} trained candidates (>= --trials {trials}): "
                  f"nothing to search; extend it with --trials {held + 50} or start anew with --study-name NAME", highlight=False)
    else:
        goal_text = "highest val score" if goal == "accuracy" else f"fewest params with val score >= {target:.2%}"
        out.print(f"study {study_name!r} in {settings.storage_url}: {held} -> {trials} trained candidates, goal {goal_text}, "
                  f"< {max_params:,} params, <= {max_epochs} epochs; device {dev}, {settings.workers} worker{'s' * (settings.workers > 1)} x {threads} thread(s), pruner {pruner}", highlight=False)
        _note_mps(dev, settings.workers)
        if queued["warm_start"]:
            out.print(f"warm start: {', '.join(queued['warm_start'])} queued first", highlight=False)
        if queued["retries"]:
            out.print(f"retraining interrupted trial(s) {', '.join(f'#{n}' for n in queued['retries'])} before any new sample", highlight=False)
        update, bar = _progress_printer(trials, max_epochs, quiet, study.get_trials(deepcopy=False))
        try:
            run_workers(settings, study, "search", update)
        except KeyboardInterrupt:
            raise _interrupted(bar, settings) from None
        except (WorkerError, BudgetError) as e:  # anything else is a bug: keep its traceback
            bar.stop()
            raise fail(str(e)) from None
        bar.stop()
    if confirm_top:
        _confirm(settings, confirm_top, confirm_seeds, quiet)
    _show_ranked(study, 10)
    names = _names(study_name, storage)
    out.print(f"next: nas20k best{names} --export   |   nas20k report{names}   |   nas20k dashboard{names}", highlight=False)


@app.command()
def confirm(
    top: Annotated[int, typer.Option(help="How many of the best candidates (by the study's objective) to confirm.")] = 3,
    seeds: Annotated[int, typer.Option(help="Seeds each ends with: its own run plus retraining on seed+1, seed+2, ...")] = 3,
    jobs: Jobs = None,
    device: Device = "auto",
    cuda_graphs: CudaGraphs = True,
    study_name: StudyName = "nas20k",
    storage: Storage = None,
    artifacts: Artifacts = None,
    heartbeat: Heartbeat = 30,
    data_dir: DataDir = None,
    download: Download = True,
    val_size: ValSize = 5000,
    limit: Limit = None,
    quiet: Quiet = False,
) -> None:
    """Retrain the top candidates on more seeds, so the winner is a mean, not one lucky run; resumable."""
    try:
        if top < 1 or seeds < 1:
            raise UserError("--top and --seeds must be >= 1")
        study = _open(study_name, storage)
        settings = _settings(study_name=study_name, storage=storage, artifacts=artifacts, budget=study_budget(study), goal=study_goal(study),
                             jobs=jobs, device=device, cuda_graphs=cuda_graphs, data_dir=data_dir, download=download,
                             val_size=val_size, limit=limit, heartbeat=heartbeat)
        _note_mps(pick_device(device), settings.workers)
        _confirm(settings, top, seeds, quiet)
    except UserError as e:
        raise fail(str(e)) from None
    _show_ranked(study, max(top, 5))


def _open(study_name: str, storage: str | None):  # noqa: ANN202
    return load_study(storage or default_storage(study_name), study_name)


def _settings(*, artifacts: Path | None, data_dir: Path | None, **options: object) -> SearchSettings:
    """What `search` and `confirm` run with: the paths as the strings SearchSettings keeps, every other option by name."""
    return SearchSettings(artifacts=str(artifacts) if artifacts else None, data_dir=str(data_dir) if data_dir else None, **options)


@app.command()
def best(
    directory: Annotated[Path | None, typer.Argument(metavar="[DIR]", help="Export folder, with --export  [default: studies/best, or studies/smallest with --smallest]", show_default=False)] = None,
    export_model: Annotated[bool, typer.Option("--export", help="Write model.pt2 (torch.export), model.pt, spec.json, metrics.json (with per-seed figures under `seeds`), summary.txt, history.csv (and model.onnx with the onnx extra) into DIR.")] = False,
    smallest: Annotated[bool, typer.Option(help=f"The fewest-parameter candidate whose confirmed (>= {CONFIRMED} seeds) mean val score reaches --target, instead of the best.")] = False,
    target: Annotated[float | None, typer.Option(help="Val score for --smallest  [default: the study's --target, else 0.994]", show_default=False)] = None,
    study_name: StudyName = "nas20k",
    storage: Storage = None,
    artifacts: Artifacts = None,
) -> None:
    """Show the best trial (by mean val score over its seeds), its layer table and the requirement checklist; optionally export it."""
    export_dir = (directory or Path("studies/smallest" if smallest else "studies/best")) if export_model else None
    try:
        if directory is not None and not export_model:
            raise UserError(f"{directory} is an export folder: add --export")
        if export_dir is not None and export_dir.exists() and not export_dir.is_dir():
            raise UserError(f"cannot export into {export_dir}: it is a file, not a folder")
        study = _open(study_name, storage)
        r = smallest_record(study, target or study_goal(study).target) if smallest else best_record(study)
    except UserError as e:
        raise fail(str(e)) from None
    sd = "" if r.sd_val() is None else f" ± {r.sd_val():.2%}"
    what = "smallest passing" if smallest else "best"
    out.print(f"{what} trial #{r.number} of study {study_name!r}: {r.params:,} params, mean val score {pct(r.mean_val())}{sd} over {max(r.n_seeds, 1)} seed(s) "
              f"(test, mean of last 3 epochs: {pct(r.mean_test_last3())}), {r.epochs} epochs", highlight=False)
    for s in r.seeds:
        out.print(f"  seed {s.seed}: val score {pct(s.val_score)}, test last 3 {pct(s.test_acc_last3)} ({s.source})", highlight=False)
    out.print(f"spec:  {json.dumps(r.candidate.spec.to_dict())}", highlight=False, soft_wrap=True)
    out.print(f"train: {json.dumps(r.candidate.train.to_dict())}", highlight=False, soft_wrap=True)
    out.print(summary(r.candidate.spec), highlight=False)
    show_checklist(record_checklist(study, r))
    if export_dir is not None:
        url = storage or default_storage(study_name)
        try:
            files = export(study, r, artifacts or default_artifacts(url, study_name), export_dir)
        except UserError as e:
            raise fail(str(e)) from None
        out.print(f"exported to {export_dir}: {', '.join(f.name for f in files)}", highlight=False)


@app.command("trials")
def trials_cmd(
    top: Annotated[int | None, typer.Option(help="Show only the first K rows.", show_default=False)] = None,
    sort: Annotated[str, typer.Option(help="Column to sort by (descending for scores, ascending otherwise), e.g. mean_val, val_score, params, trial, seconds.")] = "mean_val",
    state: Annotated[str | None, typer.Option(help="Only trials in this status: complete, pruned, rejected, diverged, interrupted, failed, running.", show_default=False)] = None,
    csv: Annotated[Path | None, typer.Option(help="Write all rows and columns to this CSV file.", show_default=False)] = None,
    study_name: StudyName = "nas20k",
    storage: Storage = None,
) -> None:
    """List the study's trials as a table: status, params, epochs, val scores over seeds, test, seconds, main hyper-parameters."""
    try:
        study = _open(study_name, storage)
        frame = trials_frame(search_records(study))
        if sort not in frame.columns:
            raise UserError(f"--sort must be one of {', '.join(frame.columns)}, got {sort!r}")
    except UserError as e:
        raise fail(str(e)) from None
    if state:
        frame = frame[frame.status == state]
    frame = frame.sort_values(sort, ascending=sort not in ("val_score", "mean_val", "last_val", "test_acc", "test_last3", "seeds"), na_position="last")
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
    """Write one HTML page: summary, best trial and recipe, trials table, history, accuracy vs params, curves, importances."""
    try:
        if out_file.is_dir():
            raise UserError(f"--out must be a file, but {out_file} is a folder")
        study = _open(study_name, storage)
    except UserError as e:
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
    except UserError as e:
        raise fail(str(e)) from None
    url = storage or default_storage(study_name)
    out.print(f"optuna-dashboard on http://{host}:{port} (Ctrl-C to stop)", highlight=False)
    run_server(study._storage, host=host, port=port, artifact_store=FileSystemArtifactStore(str(artifacts or default_artifacts(url, study_name))))


def main() -> None:
    app()
