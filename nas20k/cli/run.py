"""`nas20k search` and `nas20k confirm`: the commands that run workers."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nas20k.base.errors import UserError
from nas20k.base.mission import GOALS, TARGET_ACC, Budget, Goal
from nas20k.cli.app import app, err, names, open_study, out, quiet_optuna, show_ranked
from nas20k.cli.options import CONFIRM_OPTIONS, PRUNER_HELP, RUN_OPTIONS, add_options
from nas20k.core.pruners import DEFAULT_PRUNER, rungs

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

def _settings(run: dict, **more: Any) -> SearchSettings:
    from nas20k.runner.settings import SearchSettings

    quiet_optuna()
    paths = {k: str(run[k]) if run[k] else None for k in ("artifacts", "data_dir")}
    kept = {k: v for k, v in run.items() if k not in ("artifacts", "data_dir", "quiet")}
    return SearchSettings(**kept, **paths, **more)


def _running_on(settings: SearchSettings) -> None:
    """How the run executes: device, precision, workers and how they share processes."""
    out.print(f"running on {settings.execution.header()}")


def _run(settings: SearchSettings, task: Any, study: optuna.Study, reporter: Any) -> None:
    """Run the workers; a signal ends the command with the line that says how to continue."""
    from nas20k.base.optuna_private import rdb_of
    from nas20k.runner.workers import BudgetError, WorkerError, run_workers

    try:
        run_workers(settings, task, lambda: study.get_trials(deepcopy=False), reporter, rdb_of(study))
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
    plan = Plan(trained_count(before) + at_most, settings.execution.workers, settings.budget.max_epochs, pruned=False)

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


def _shrink(settings: SearchSettings, seeds: int, quiet: bool) -> None:
    """The smallest goal's shrink search (shrink.py) over the confirmed passing designs, then its steps' verdicts."""
    from nas20k.readers.progress import Plan, Reporter
    from nas20k.runner.confirm import open_confirm_study
    from nas20k.runner.shrink import RATIO, REPAIRS, shrink_steps, shrink_worker
    from nas20k.runner.study import trained_count

    study, confirm = open_confirm_study(settings)
    out.print(f"shrink search: each confirmed pass scaled to about {RATIO:.0%} of its parameters, step by step, "
              f"each step raced over up to {seeds} seeds; a failed step's same-size neighbours (another recipe or "
              f"padding) are each screened on one run and the {REPAIRS} best raced, then its lineage ends; with no "
              "pass at all, the race's closest fail is repaired the same way")
    before = confirm.get_trials(deepcopy=False)
    plan = Plan(trained_count(before) + seeds, settings.execution.workers, settings.budget.max_epochs, pruned=False)

    def replan(trials: list[FrozenTrial]) -> Plan:  # how far ahead it can see: one step's seeds
        return replace(plan, target=trained_count(trials) + seeds)

    _run(settings, partial(shrink_worker, seeds=seeds), confirm,
         Reporter(out, plan, before, quiet, unit="seed runs", replan=replan))
    for r, verdict in shrink_steps(study, seeds):
        mean = f"mean val {r.mean_val():.2%} over {r.n_seeds} seed(s)" if r.n_seeds else r.reason
        # the search is over: an open step is a screened repair outside the REPAIRS raced
        out.print(f"  #{r.number} {r.params:,} params ({r.origin}): {verdict or 'open, not raced'}, {mean}")


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
    start: Annotated[list[str] | None, typer.Option(
        help="Queue this zoo design first instead of the lead and its followers (repeatable, in order; scaled to the "
             "budget if over it), e.g. to re-confirm one on another --split-seed.", show_default=False)] = None,
    local_search: Annotated[bool, typer.Option(
        help="Make every third trained trial a neighbour of a top design (one gene changed) instead of TPE's.")] = True,
    confirm_top: Annotated[int, typer.Option(
        help="Then race this many top candidates over more seeds (0: skip; `nas20k confirm` later).")] = TOP,
    shrink: Annotated[bool, typer.Option(
        help="--goal smallest: then scale each confirmed pass down, step by step, raced over --confirm-seeds seeds, "
             "until a step fails; the smallest passing step wins.")] = True,
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
                         pruner=pruner, seed=seed, warm_start=warm_start, starts=tuple(start or ()),
                         local_search=local_search)
    confirm_seeds = SEEDS.get(goal, 3) if confirm_seeds is None else confirm_seeds  # a bad --goal: refused below
    if confirm_top < 0 or confirm_seeds < 1:
        raise UserError("--confirm-top must be >= 0 and --confirm-seeds >= 1")
    settings.validate()  # the flags, before torch and the storage load
    from nas20k.readers.progress import Plan, Reporter, first_result_text
    from nas20k.readers.record import records
    from nas20k.runner.storage import redact
    from nas20k.runner.study import prepare, probe_seconds_per_epoch, search_worker, trained_count

    study, queued = prepare(settings)
    before = study.get_trials(deepcopy=False)
    held = trained_count(before)
    if held >= trials:
        out.print(f"study {settings.study_name!r} already holds {held} trained candidates (>= --trials {trials}); "
                  f"extend it with --trials {held + 50}, or start anew with --study-name NAME")
    else:
        aim = "highest val score" if goal == "accuracy" else f"fewest params with val score >= {target:.2%}"
        out.print(f"study {settings.study_name!r} ({redact(settings.storage_url)}): {held} -> {trials} trained, {aim}, "
                  f"< {max_params:,} params, <= {max_epochs} epochs, pruner {pruner}")
        _running_on(settings)
        if queued["retries"]:
            out.print(f"first: retraining interrupted trial(s) {', '.join(f'#{n}' for n in queued['retries'])}")
        if queued["warm_start"]:
            out.print(f"warm start queued: {', '.join(queued['warm_start'])}")
        if not run["quiet"] and (speed := probe_seconds_per_epoch(settings, study)):
            out.print(first_result_text(records(study.get_trials(deepcopy=False)), max_epochs, speed))
        confirm_runs = confirm_top * (confirm_seeds - 1)
        plan = Plan(target=trials, workers=settings.execution.workers, max_epochs=max_epochs, confirm_runs=confirm_runs,
                    rungs=tuple(rungs(pruner, max_epochs)))
        _run(settings, search_worker, study, Reporter(out, plan, before, run["quiet"]))
    if confirm_top:
        _confirm(settings, confirm_top, confirm_seeds, run["quiet"])
    if confirm_top and shrink and goal == "smallest":
        _shrink(settings, confirm_seeds, run["quiet"])
    show_ranked(study, 10)
    where = names(settings.study_name, settings.storage)
    out.print(f"next: nas20k best{where} --export  |  nas20k report{where}  |  nas20k dashboard{where}")


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

    study = open_study(run["study_name"], run["storage"])
    meta = StudyMeta.of(study)
    seeds = SEEDS[meta.goal.kind] if seeds is None else seeds
    if top < 1 or seeds < 1:
        raise UserError("--top and --seeds must be >= 1")
    recorded = meta.data or DataSplit()  # a study from before the split was recorded: the defaults
    data = {k: getattr(recorded, k) if run[k] is None else run[k] for k in ("val_size", "limit", "split_seed")}
    settings = _settings({**run, **data}, budget=meta.budget, goal=meta.goal)
    _running_on(settings)
    _confirm(settings, top, seeds, run["quiet"])
    show_ranked(study, max(top, 5))


