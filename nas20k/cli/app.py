"""The `nas20k` command line (typer): train, search, confirm, best, trials, report, dashboard.

Every mistake a user can fix is a `UserError`, printed as one `error:` line by `Cli.main` (option-parsing errors
too); anything else is a bug and keeps its traceback. torch, optuna and plotly are imported inside the commands
that use them, so `--help` and errors answer at once.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from nas20k.base.errors import UserError
from nas20k.base.mission import GOALS, TARGET_ACC, Budget, Goal
from nas20k.cli.options import (
    CONFIRM_OPTIONS,
    DATA_OPTIONS,
    DEVICE_OPTIONS,
    PRUNER_HELP,
    RUN_OPTIONS,
    STUDY_OPTIONS,
    add_options,
    recipe_options,
)
from nas20k.core.factory import PRESETS, ArchSpec, summary
from nas20k.core.recipe import TrainConfig, load_recipe
from nas20k.readers.tables import pct, table
from nas20k.runner.pruners import DEFAULT_PRUNER

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from nas20k.runner.settings import SearchSettings

# Seeds a confirmed winner ends with, by goal: a smallest-goal winner is judged pass/fail against a target, where a
# mean of 5 ranks designs closer to their held-out test means than 3 (benchmarks/val_selection.py, docs/results.md).
SEEDS = {"accuracy": 3, "smallest": 5}
# Candidates in the race: two, with the race's budget of TOP * (seeds - 1) runs, kept the winner of every recorded
# race in 4-8 runs where three had taken 4-12 (docs/design.md#seed-confirmed-winners).
TOP = 2
out = Console(highlight=False)  # a terminal's width; 80 columns in logs and pipes unless COLUMNS says otherwise
err = Console(stderr=True, highlight=False)
MARK = {True: "[green]✓[/green]", False: "[red]✗[/red]", None: "[yellow]?[/yellow]"}  # passed, failed, unconfirmed


class Cli(TyperGroup):
    """One place that turns a user's mistake into one line on stderr and an exit code."""

    def main(self, args: Any = None, prog_name: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)  # typer hands back an Exit's code
        except typer.TyperException as e:  # option parsing; a bare command's help (no_args_is_help) comes this way too
            message, ctx = e.format_message(), getattr(e, "ctx", None)
            if "\n" in message:
                err.print(message, markup=False)
            else:
                err.print(f"[red]error:[/red] {message}" + (f" (see: {ctx.command_path} --help)" if ctx else ""),
                          soft_wrap=True)
            code = e.exit_code
        except UserError as e:
            err.print(f"[red]error:[/red] {e}", soft_wrap=True)
            code = 1
        except typer.Exit as e:
            code = e.exit_code
        except typer.Abort:
            code = 130
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(cls=Cli, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Search small MNIST CNNs under a parameter and epoch budget (default: < 20,000 params, "
                       "<= 20 epochs, >= 99.4 % test).")


@app.command("train")
@add_options(recipe_options(), into="recipe_flags")
@add_options({**DEVICE_OPTIONS, **DATA_OPTIONS}, into="run")
def train_cmd(
    preset: Annotated[str | None, typer.Option(help=f"Architecture preset: {', '.join(PRESETS)}.",
                                               show_default=False)] = None,
    spec: Annotated[Path | None, typer.Option(help="Architecture as a spec JSON file, e.g. studies/best/spec.json.",
                                              show_default=False)] = None,
    recipe: Annotated[Path | None, typer.Option(help="Take the recipe from a JSON file (an export's metrics.json, or a "
                                                "recipe); the recipe flags are then ignored, except --seed.",
                                                show_default=False)] = None,
    compile: Annotated[bool, typer.Option(  # noqa: A002
        help="torch.compile the model (tens of seconds per architecture).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    recipe_flags: dict | None = None,
    run: dict | None = None,
) -> None:
    """Train one architecture (a preset or a spec file), then report its test accuracy."""
    from nas20k.core.data import load_mnist
    from nas20k.core.runtime import resolve
    from nas20k.core.train import EpochStats, evaluate, train

    if (preset is None) == (spec is None):
        raise UserError("give exactly one of --preset NAME or --spec FILE")
    if preset is not None and preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    arch = PRESETS[preset] if preset else ArchSpec.load(spec)
    arch.validate()
    cfg = replace(load_recipe(recipe), seed=recipe_flags["seed"]) if recipe else TrainConfig(**recipe_flags)
    cfg.validate()
    runtime = resolve(run["device"], run["precision"], compile=compile, cuda_graphs=run["cuda_graphs"])
    data = load_mnist(run["data_dir"], val_size=run["val_size"], limit=run["limit"], device=runtime.device,
                      download=run["download"])
    if cfg.batch_size > len(data.train):
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the {len(data.train):,} training images")
    out.print(summary(arch))
    out.print(f"train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,} images "
              f"on {runtime.describe()}")
    out.print(f"recipe: {json.dumps(cfg.to_dict())}", soft_wrap=True)

    def log(s: EpochStats) -> None:
        out.print(f"epoch {s.epoch:>3}/{cfg.epochs}  loss {s.train_loss:.4f}  train {pct(s.train_acc)}  "
                  f"val {pct(s.val_acc)}  lr {s.lr:.3g}  {s.seconds:.1f}s")

    result = train(arch, cfg, data, log, runtime=runtime, progress=not quiet)
    if result.status == "diverged":
        raise UserError(f"diverged: the loss became NaN/inf in epoch {len(result.history) + 1}; lower --lr")
    total = sum(s.seconds for s in result.history)
    out.print(f"params {arch.num_params():,}  val {pct(result.history[-1].val_acc)}  "
              f"test {pct(evaluate(result.model, data.test))}  ({total:.0f}s training)")


# --- search and confirm -----------------------------------------------------------------------------------

def _quiet_optuna() -> None:
    """Our own lines say what happens to each study and trial; Optuna's would repeat them."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)


def _settings(run: dict, **more: Any) -> SearchSettings:
    from nas20k.runner.settings import SearchSettings

    _quiet_optuna()
    paths = {k: str(run[k]) if run[k] else None for k in ("artifacts", "data_dir")}
    kept = {k: v for k, v in run.items() if k not in ("artifacts", "data_dir", "quiet")}
    return SearchSettings(**kept, **paths, **more)


def _running_on(settings: SearchSettings) -> None:
    """How the run executes: device, precision, workers and how they share processes."""
    out.print(f"running on {settings.header()}")


def _run(settings: SearchSettings, task: Any, study: optuna.Study, reporter: Any) -> None:
    """Run the workers; a signal ends the command with the line that says how to continue."""
    from nas20k.runner.workers import BudgetError, WorkerError, run_workers

    try:
        run_workers(settings, task, lambda: study.get_trials(deepcopy=False), reporter)
    except KeyboardInterrupt:
        reporter.stop()
        err.print(f"interrupted: study {settings.study_name!r} is saved; its interrupted trial trains first next time.")
        err.print(f"continue with: {shlex.join(['nas20k', *sys.argv[1:]])}", soft_wrap=True)  # one line to copy
        raise typer.Exit(130) from None
    except (WorkerError, BudgetError) as e:  # anything else is a bug: keep its traceback
        reporter.stop()
        raise UserError(str(e)) from None
    reporter.stop()


def _confirm(settings: SearchSettings, top: int, seeds: int, quiet: bool) -> None:
    """Race the top candidates over more seeds (confirm.py), then show them ranked by mean val score."""
    from nas20k.readers.progress import Plan, Reporter
    from nas20k.runner.confirm import confirm_worker, open_confirm_study, remaining
    from nas20k.runner.study import trained_count

    study, confirm = open_confirm_study(settings)
    at_most = remaining(study, confirm, top, seeds)
    if not at_most:
        out.print(f"the race is over: the leader has {seeds} seeds, and the others theirs or the race's runs are spent")
        return
    out.print(f"confirming the top {top} on up to {seeds} seeds each, raced: at most {at_most} run(s), and a new "
              f"leader's seeds if the leader falls")
    before = confirm.get_trials(deepcopy=False)
    plan = Plan(trained_count(before) + at_most, settings.workers, settings.budget.max_epochs, pruned=False)

    def replan(trials: list[FrozenTrial]) -> Plan:  # what the race has trained, and what the current top still needs
        return replace(plan, target=trained_count(trials) + remaining(study, confirm, top, seeds))

    _run(settings, partial(confirm_worker, top=top, seeds=seeds), confirm,
         Reporter(out, plan, before, quiet, unit="runs", replan=replan))
    runs = trained_count(confirm.get_trials(deepcopy=False)) - trained_count(before)
    out.print(f"confirmation: {runs} run(s) trained")
    _note_winner(study)


def _note_winner(study: optuna.Study) -> None:
    """optuna-dashboard's best trial is the best single run, nas20k's the best mean over seeds: a note says which."""
    from optuna_dashboard import save_note

    from nas20k.readers.record import StudyMeta, search_records
    from nas20k.readers.results import best_record

    r = best_record(search_records(study), StudyMeta.of(study), study.study_name)
    save_note(study, f"nas20k's winner (`nas20k best`): trial {r.number}, mean val score {r.mean_val():.2%} over "
                     f"{r.n_seeds} seed(s). The dashboard's best trial is the best single run.")


@app.command()
@add_options(RUN_OPTIONS, into="run")
def search(
    trials: Annotated[int, typer.Option(help="Trained candidates the study should hold (complete + pruned + diverged); "
                                             "re-running continues up to this number.")] = 50,
    max_params: Annotated[int, typer.Option(
        help="Parameter budget: candidates with this many or more are rejected before training.")] = 20_000,
    max_epochs: Annotated[int, typer.Option(
        help="Epoch budget: every candidate trains at most this many epochs.")] = 20,
    goal: Annotated[str, typer.Option(help=f"{' | '.join(GOALS)}: the highest val score, or the fewest parameters "
                                           "whose val score reaches --target.")] = "accuracy",
    target: Annotated[float, typer.Option(
        help="Val score a --goal smallest search must reach (val runs 0.1-0.3 points below test).")] = TARGET_ACC,
    pruner: Annotated[str, typer.Option(help=PRUNER_HELP)] = DEFAULT_PRUNER,
    warm_start: Annotated[bool, typer.Option(
        help="Seed a new study with the known designs that fit the budget (scaled where they do not).")] = True,
    confirm_top: Annotated[int, typer.Option(
        help="Then race this many top candidates over more seeds (0: skip; `nas20k confirm` later).")] = TOP,
    confirm_seeds: Annotated[int | None, typer.Option(
        help="Seeds the confirmed winner ends with (its own run counts as one)  \\[default: 3; 5 for --goal smallest]",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option(
        help="Seed of the TPE sampler (offset per worker and by the study's trials) and of training.")] = 0,
    run: dict | None = None,
) -> None:
    """Search architectures and training recipes with Optuna (TPE + pruning) under the budget, then confirm the
    winners on more seeds; resumable (re-run the same command)."""
    settings = _settings(run, trials=trials, budget=Budget(max_params, max_epochs), goal=Goal(goal, target),
                         pruner=pruner, seed=seed, warm_start=warm_start)
    confirm_seeds = SEEDS.get(goal, 3) if confirm_seeds is None else confirm_seeds  # a bad --goal: refused below
    if confirm_top < 0 or confirm_seeds < 1:
        raise UserError("--confirm-top must be >= 0 and --confirm-seeds >= 1")
    settings.validate()  # the flags, before torch and the storage load
    from nas20k.readers.progress import Plan, Reporter, first_result_text
    from nas20k.readers.record import records
    from nas20k.runner.study import prepare, probe_seconds_per_epoch, search_worker, trained_count

    study, queued = prepare(settings)
    before = study.get_trials(deepcopy=False)
    held = trained_count(before)
    if held >= trials:
        out.print(f"study {settings.study_name!r} already holds {held} trained candidates (>= --trials {trials}); "
                  f"extend it with --trials {held + 50}, or start anew with --study-name NAME")
    else:
        aim = "highest val score" if goal == "accuracy" else f"fewest params with val score >= {target:.2%}"
        out.print(f"study {settings.study_name!r} ({settings.storage_url}): {held} -> {trials} trained, {aim}, "
                  f"< {max_params:,} params, <= {max_epochs} epochs, pruner {pruner}")
        _running_on(settings)
        if queued["retries"]:
            out.print(f"first: retraining interrupted trial(s) {', '.join(f'#{n}' for n in queued['retries'])}")
        if queued["warm_start"]:
            out.print(f"warm start queued: {', '.join(queued['warm_start'])}")
        if not run["quiet"] and (speed := probe_seconds_per_epoch(settings, study)):
            out.print(first_result_text(records(study.get_trials(deepcopy=False)), max_epochs, speed))
        confirm_runs = confirm_top * (confirm_seeds - 1)
        plan = Plan(target=trials, workers=settings.workers, max_epochs=max_epochs, confirm_runs=confirm_runs)
        _run(settings, search_worker, study, Reporter(out, plan, before, run["quiet"]))
    if confirm_top:
        _confirm(settings, confirm_top, confirm_seeds, run["quiet"])
    _show_ranked(study, 10)
    names = _names(settings.study_name, settings.storage)
    out.print(f"next: nas20k best{names} --export  |  nas20k report{names}  |  nas20k dashboard{names}")


@app.command()
@add_options(CONFIRM_OPTIONS, into="run")
def confirm(
    top: Annotated[int, typer.Option(
        help="How many of the best candidates (by the study's goal) race for more seeds.")] = TOP,
    seeds: Annotated[int | None, typer.Option(help="Seeds the winner ends with: its own run plus seed+1, seed+2, ...  "
                                                  "\\[default: 3; 5 for a --goal smallest study]",
                                              show_default=False)] = None,
    run: dict | None = None,
) -> None:
    """Retrain the top candidates on more seeds, raced, so the winner is a mean, not one lucky run; resumable."""
    from nas20k.core.data import DataSplit
    from nas20k.readers.record import StudyMeta

    study = _open(run["study_name"], run["storage"])
    meta = StudyMeta.of(study)
    seeds = SEEDS[meta.goal.kind] if seeds is None else seeds
    if top < 1 or seeds < 1:
        raise UserError("--top and --seeds must be >= 1")
    recorded = meta.data or DataSplit()  # a study from before the split was recorded: the defaults
    data = {k: getattr(recorded, k) if run[k] is None else run[k] for k in ("val_size", "limit")}
    settings = _settings({**run, **data}, budget=meta.budget, goal=meta.goal)
    _running_on(settings)
    _confirm(settings, top, seeds, run["quiet"])
    _show_ranked(study, max(top, 5))


# --- readers -----------------------------------------------------------------------------------------

def _open(study_name: str, storage: str | None) -> optuna.Study:
    from nas20k.runner.storage import default_storage, load_study

    _quiet_optuna()
    return load_study(storage or default_storage(study_name), study_name)


def _names(study_name: str, storage: str | None) -> str:
    return ((f" --study-name {study_name}" if study_name != "nas20k" else "")
            + (f" --storage {storage}" if storage else ""))


def _show_ranked(study: optuna.Study, k: int) -> None:
    """The `k` best completed trials, in the ranking `best` uses."""
    from nas20k.readers.record import StudyMeta, search_records
    from nas20k.readers.results import ranked, trials_frame

    meta = StudyMeta.of(study)
    top = ranked(search_records(study), meta.goal, meta.budget)[:k]
    out.print(table(trials_frame(top), wide=False))


@app.command()
@add_options(STUDY_OPTIONS, into="where")
def best(
    directory: Annotated[Path | None, typer.Argument(
        metavar="[DIR]", show_default=False,
        help="Export folder  \\[default: studies/<study-name>-best, or -smallest]")] = None,
    export_model: Annotated[bool, typer.Option(
        "--export", help="Write model.pt2 (torch.export), model.pt, spec.json, metrics.json, summary.txt, history.csv "
                         "into DIR.")] = False,
    force: Annotated[bool, typer.Option(
        help="Let --export replace files in DIR that this study did not write.")] = False,
    smallest: Annotated[bool, typer.Option(
        help="The fewest-parameter candidate whose confirmed mean val score reaches --target.")] = False,
    target: Annotated[float | None, typer.Option(
        help="Val score for --smallest  \\[default: the study's --target]", show_default=False)] = None,
    artifacts: Annotated[Path | None, typer.Option(
        help="Where the study's weights are  \\[default: next to its SQLite file]", show_default=False)] = None,
    where: dict | None = None,
) -> None:
    """Show the best trial (by mean val score over its seeds), its layer table and the checklist; optionally export it."""  # noqa: E501 - one line in `nas20k --help`
    from nas20k.readers.record import StudyMeta, search_records
    from nas20k.readers.results import best_record, record_checklist, smallest_record
    from nas20k.runner.settings import runtime_line
    from nas20k.runner.storage import default_artifacts, default_storage, redact

    name, url = where["study_name"], where["storage"] or default_storage(where["study_name"])
    if directory is not None and not export_model:
        raise UserError(f"{directory} is an export folder: add --export")
    study = _open(name, where["storage"])
    meta, recs = StudyMeta.of(study), search_records(study)
    r = smallest_record(recs, meta, name, target or meta.goal.target) if smallest else best_record(recs, meta, name)
    sd = "" if r.sd_val() is None else f" ± {r.sd_val():.2%}"
    out.print(f"{'smallest passing' if smallest else 'best'} trial #{r.number} of {name!r}: {r.params:,} params, "
              f"{r.epochs} epochs")
    out.print(f"mean val score {pct(r.mean_val())}{sd} over {max(r.n_seeds, 1)} seed(s); "
              f"test (mean of last 3 epochs) {pct(r.mean_test_last3())}")
    if r.n_seeds < 2:
        out.print("unconfirmed: one seed; run `nas20k confirm` for a mean over seeds")
    for s in r.seeds:
        out.print(f"  seed {s.seed}: val score {pct(s.val_score)}, test last 3 {pct(s.test_acc_last3)} ({s.source})")
    out.print(f"spec:  {json.dumps(r.candidate.spec.to_dict())}", soft_wrap=True)
    out.print(f"train: {json.dumps(r.candidate.train.to_dict())}", soft_wrap=True)
    for run in meta.runtime:
        out.print(f"ran on: {runtime_line(run)}")
    out.print(summary(r.candidate.spec))
    for line, ok in record_checklist(r, meta):
        out.print(f"  {MARK[ok]} {line}")
    if export_model:
        from nas20k.readers.export import export

        folder = directory or Path("studies") / f"{name.replace(':', '-')}-{'smallest' if smallest else 'best'}"
        files = export(name, redact(url), r, meta, artifacts or default_artifacts(url, name), folder, force)
        out.print(f"exported to {folder}: {', '.join(f.name for f in files)}")


@app.command("trials")
@add_options(STUDY_OPTIONS, into="where")
def trials_cmd(
    top: Annotated[int | None, typer.Option(help="Show only the first K rows.", show_default=False)] = None,
    sort: Annotated[str, typer.Option(
        help="Column to sort by (descending for scores), e.g. mean_val, params, trial, seconds.")] = "mean_val",
    state: Annotated[str | None, typer.Option(
        help="Only trials in this status: complete, pruned, rejected, diverged, interrupted, failed, running.",
        show_default=False)] = None,
    wide: Annotated[bool, typer.Option(help="All columns (wider than 80 characters).")] = False,
    csv: Annotated[Path | None, typer.Option(help="Write all rows and columns to this CSV file.",
                                             show_default=False)] = None,
    where: dict | None = None,
) -> None:
    """List the study's trials: status, params, epochs, val scores over seeds, test, main hyper-parameters."""
    from nas20k.readers.record import search_records
    from nas20k.readers.results import trials_frame

    frame = trials_frame(search_records(_open(where["study_name"], where["storage"])))
    if sort not in frame.columns:
        raise UserError(f"--sort must be one of {', '.join(frame.columns)}, got {sort!r}")
    if state:
        frame = frame[frame.status == state]
    descending = ("val_score", "mean_val", "last_val", "test_acc", "test_last3", "seeds")
    frame = frame.sort_values(sort, ascending=sort not in descending, na_position="last")
    if csv:
        frame.to_csv(csv, index=False)
        out.print(f"wrote {len(frame)} rows to {csv}")
    # --wide: as wide as it takes
    (Console(highlight=False, width=10_000) if wide else out).print(table(frame.head(top or len(frame)), wide))


@app.command()
@add_options(STUDY_OPTIONS, into="where")
def report(
    out_file: Annotated[Path, typer.Option(
        "--out", help="HTML file to write (self-contained: opens offline).")] = Path("studies/report.html"),
    where: dict | None = None,
) -> None:
    """Write one HTML page: summary, best trial and recipe, history, accuracy vs params, curves, importances, trials."""
    if out_file.is_dir():
        raise UserError(f"--out must be a file, but {out_file} is a folder")
    from nas20k.readers.report import write_report

    path = write_report(_open(where["study_name"], where["storage"]), out_file)
    out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")


@app.command()
@add_options(STUDY_OPTIONS, into="where")
def dashboard(
    host: Annotated[str, typer.Option(help="Interface to listen on (localhost: this machine only).")] = "localhost",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    artifacts: Annotated[Path | None, typer.Option(help="Where the study's weights are.", show_default=False)] = None,
    where: dict | None = None,
) -> None:
    """Browse the study in optuna-dashboard: trials, learning curves, importances, saved weights."""
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    from nas20k.base.optuna_private import storage_of
    from nas20k.runner.storage import default_artifacts, default_storage

    name, url = where["study_name"], where["storage"] or default_storage(where["study_name"])
    study = _open(name, where["storage"])
    out.print(f"optuna-dashboard on http://{host}:{port} (Ctrl-C to stop)")
    run_server(storage_of(study), host=host, port=port,
               artifact_store=FileSystemArtifactStore(str(artifacts or default_artifacts(url, name))))


def main() -> None:
    app()
