"""The report's data, on synthetic studies (no training): what each figure plots and where its axes stop, what the
tables hold, what the page rests on. Asserts on figure traces, layouts and DataFrames, not on markup or wording.

`synthetic_study` samples the real search space with a fake objective that records what the real one records
(through `record.write`), so the report sees real parameter names, distributions, rejects and seed runs.
"""

from __future__ import annotations

import datetime
import random
from pathlib import Path

import optuna
import pandas as pd
import plotly.graph_objects as go
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from nas20k.base.mission import TARGET_ACC, Budget, Goal
from nas20k.core.factory import SpecError
from nas20k.core.recipe import TrainConfig, labels
from nas20k.core.space import Candidate, suggest
from nas20k.readers import report
from nas20k.readers.record import CONFIRM_SUFFIX, SCORE_EPOCHS, StudyMeta, records, search_records, write
from nas20k.readers.report import NO_TRAINED, candidate_frames, figures, summary, told, winner, write_report, zoom
from nas20k.readers.results import best_record, pareto_front, smallest_record

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPEC = {"blocks": [[8, 16], [16, 16, 16, 16]], "transitions": [8], "head": "gap", "dropout": 0.05,
        "dropout_after": [1, 5]}
BUDGET = Budget(max_params=20_000, max_epochs=20)
HISTORY, FRONTIER, CURVES, IMPORTANCES, PARALLEL = report.TITLES
START = datetime.datetime(2026, 1, 1, 12, 0)


# --- Synthetic studies -----------------------------------------------------------------------------

def _history(accs: list[float | None], test: float | None = 0.993) -> list[dict]:
    """Per-epoch records as the trainer writes them: test accuracy only in the last SCORE_EPOCHS epochs, and
    val_acc None on the epochs it did not evaluate."""
    n = len(accs)
    return [{"epoch": e, "train_loss": 0.1, "train_acc": a, "val_acc": a, "seconds": 10.0, "lr": 0.05,
             "test_acc": test if test is not None and e > n - SCORE_EPOCHS else None} for e, a in enumerate(accs, 1)]


def _fake_objective(budget: Budget, goal: Goal, trial: optuna.Trial) -> float:
    """The real objective's records and fates (rejected, pruned, diverged, complete), with made-up accuracies."""
    candidate = suggest(trial, budget.max_epochs)
    write(trial, candidate=candidate.to_dict())
    try:
        params = candidate.spec.num_params()
    except SpecError as e:
        write(trial, status="rejected", reason=str(e))
        raise optuna.TrialPruned(str(e)) from None
    write(trial, params=params, macs=candidate.spec.macs())
    if params >= budget.max_params:
        write(trial, status="rejected", reason=f"over budget: {params:,} params >= {budget.max_params:,}")
        raise optuna.TrialPruned("over budget")
    rng = random.Random(trial.number)
    final = min(0.9965, 0.978 + 0.016 * params / budget.max_params + rng.uniform(-0.004, 0.003))
    accs = [round(final - 0.03 * (1 - e / budget.max_epochs) ** 2, 5) for e in range(1, budget.max_epochs + 1)]
    fate = trial.number % 7
    if fate in (1, 3, 5):  # pruned after 1, 3 or 5 epochs
        history = _history(accs[:fate], test=None)
        write(trial, history=history, status="pruned", reason=f"pruned at epoch {fate}", seconds=10.0 * fate)
        raise optuna.TrialPruned()
    if fate == 6 and trial.number % 2:
        write(trial, history=_history(accs[:2], test=None), status="diverged",
              reason="diverged: loss became NaN/inf in epoch 3", seconds=25.0)
        raise optuna.TrialPruned("diverged")
    history = _history(accs, test=round(final + 0.001, 5))
    score = sum(accs[-SCORE_EPOCHS:]) / SCORE_EPOCHS
    write(trial, history=history, status="complete", reason=f"val score {score:.2%}", val_score=score,
          test_acc=final + 0.001, test_acc_last3=final + 0.0008, seconds=10.0 * len(accs), weights="w")
    return goal.value(score, params, budget)


def _confirm(storage: optuna.storages.BaseStorage, name: str, runs: list[tuple[int, int, float]]) -> None:
    """Seed runs (search trial, seed, val score) in the sibling confirm study, as `nas20k confirm` records them."""
    confirm = optuna.create_study(study_name=name + CONFIRM_SUFFIX, storage=storage, direction="maximize")
    for trial, seed, val in runs:
        confirm.add_trial(create_trial(state=TrialState.COMPLETE, value=val, user_attrs={
            "status": "complete", "confirms": trial, "seed": seed, "val_score": val, "test_acc_last3": val - 0.0005}))


def synthetic_study(n: int = 40, goal: Goal = Goal(), budget: Budget = BUDGET, confirm_top: int = 3) -> optuna.Study:
    """`n` trials of the real space, fake-trained; the `confirm_top` best completed ones get 2 more seeds."""
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="synthetic", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=3))
    study.set_user_attr("budget", {"max_params": budget.max_params, "max_epochs": budget.max_epochs})
    study.set_user_attr("goal", {"kind": goal.kind, "target": goal.target})
    study.optimize(lambda t: _fake_objective(budget, goal, t), n_trials=n)
    complete = sorted((r for r in search_records(study) if r.status == "complete"), key=lambda r: -r.val_score)
    complete = complete[:confirm_top]
    _confirm(storage, "synthetic", [(r.number, s, r.val_score - 0.0004 * s) for r in complete for s in (1, 2)])
    return study


def _candidate(**train: object) -> dict:
    return Candidate.from_dict({"spec": SPEC, "train": TrainConfig(**train).to_dict()}).to_dict()


def _trained(i: int, status: str, params: int, accs: list[float | None], minutes: tuple[float, float] = (0, 1),
             **train: object) -> FrozenTrial:
    """A hand-made trained trial, run from `minutes[0]` to `minutes[1]` after START; score = mean of the last 3
    epochs if complete. Optuna keeps a pruned trial's last reported value as its value."""
    attrs = {"status": status, "reason": status, "params": params, "macs": 10 * params, "seconds": 10.0 * len(accs),
             "history": _history(accs), "candidate": _candidate(**train)}
    reported = {e: a for e, a in enumerate(accs, 1) if a is not None}
    value = list(reported.values())[-1] if reported else None
    if status == "complete":
        value = sum(accs[-3:]) / len(accs[-3:])
        attrs |= {"val_score": value, "test_acc": 0.9951, "test_acc_last3": 0.9949}
    trial = create_trial(state=TrialState.COMPLETE if status == "complete" else TrialState.PRUNED, value=value,
                         user_attrs=attrs, intermediate_values=reported)
    trial.datetime_start, trial.datetime_complete = (START + datetime.timedelta(minutes=m) for m in minutes)
    return trial


def _rejected(params: int | None) -> FrozenTrial:
    reason = (f"over budget: {params:,} params >= 20,000" if params else
              "spec does not fit a 28x28 image: conv 1 of block 3 gets 2x2 input, needs at least 3x3")
    attrs = {"status": "rejected", "reason": reason, "candidate": _candidate()} | ({"params": params} if params else {})
    trial = create_trial(state=TrialState.PRUNED, user_attrs=attrs)
    trial.datetime_start = trial.datetime_complete = START
    return trial


def _study(trials: list[FrozenTrial], goal: Goal = Goal(),
           storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    study = optuna.create_study(study_name="handmade", storage=storage, direction="maximize")
    study.set_user_attr("budget", {"max_params": 20000, "max_epochs": 20})
    study.set_user_attr("goal", {"kind": goal.kind, "target": goal.target})
    for t in trials:
        study.add_trial(t)
    return study


@pytest.fixture(scope="module")
def synthetic() -> optuna.Study:
    return synthetic_study()


@pytest.fixture(scope="module")
def synthetic_figures(synthetic: optuna.Study) -> dict[str, go.Figure | str]:
    return figures(synthetic)


@pytest.fixture()
def small() -> optuna.Study:
    """Ten trials of every kind: too few trained ones for importances."""
    return _study([
        _trained(0, "complete", 12000, [0.97, 0.985, 0.99, 0.992], optimizer="adam", lr=0.004),
        _trained(1, "pruned", 9000, [0.95]),
        _rejected(25000),
        _trained(3, "complete", 8000, [0.96, 0.98, 0.988, 0.989]),
        _trained(4, "pruned", 15000, [0.96, 0.97, 0.975]),
        _rejected(None),
        _trained(6, "complete", 18000, [0.98, 0.99, 0.994, 0.995], batch_size=64, schedule="step", drop_at=0.6),
        _trained(7, "diverged", 11000, [0.9]),
        _rejected(31000),
        create_trial(state=TrialState.FAIL),
    ])


@pytest.fixture()
def outlier() -> optuna.Study:
    """Complete trials near 99 %, trial 1 confirmed (3 seeds, sd 0.3 points), and a pruned run at 30 %."""
    storage = optuna.storages.InMemoryStorage()
    study = _study([_trained(0, "complete", 6000, [0.99, 0.991, 0.991, 0.991], (0, 10)),
                    _trained(1, "complete", 9000, [0.99, 0.993, 0.993, 0.993], (5, 30)),
                    _trained(2, "pruned", 7000, [0.30], (6, 7)),
                    _trained(3, "complete", 12000, [0.99, 0.992, 0.992, 0.992], (8, 45))], storage=storage)
    _confirm(storage, "handmade", [(1, 1, 0.996), (1, 2, 0.990)])
    return study


def _trace(fig: go.Figure, name: str) -> go.Scatter:
    return next(t for t in fig.data if t.name and t.name.startswith(name))


def _hlines(fig: go.Figure) -> list[float]:
    return [s.y0 for s in fig.layout.shapes if s.y0 == s.y1]


# --- What the figures plot, and where their axes stop -----------------------------------------------

def test_every_figure_is_drawn_and_the_page_opens_offline(synthetic: optuna.Study, synthetic_figures: dict,
                                                          tmp_path: Path) -> None:
    assert list(synthetic_figures) == list(report.TITLES)
    assert all(isinstance(f, go.Figure) for f in synthetic_figures.values())
    html = write_report(synthetic, tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.count("plotly-graph-div") >= 5 and "<script src=" not in html  # plotly.js inlined, nothing fetched


def test_accuracy_axes_zoom_to_the_trained_candidates(outlier: optuna.Study) -> None:
    shown = figures(outlier)
    recs = {r.number: r for r in search_records(outlier)}
    confirmed = recs[1]
    assert confirmed.n_seeds == 3 and confirmed.sd_val() > 0.002
    scores = [r.val_score for r in recs.values() if r.status == "complete"]
    for title in (HISTORY, FRONTIER):
        lo, hi = shown[title].layout.yaxis.range
        assert 0.30 < lo <= min(scores) and max(scores) <= hi <= 1.0005, title  # the 30 % outlier is not in range
        mean, sd = confirmed.mean_val(), confirmed.sd_val()
        assert lo <= mean - sd and mean + sd <= hi, title
        assert hi - lo < 0.03, title  # zoomed: not the 30-100 % the outlier would stretch it to
        below = _trace(shown[title], "below the axis")
        assert list(below.y) == [lo] and "30.00%" in below.hovertext[0]  # on the bottom edge; the hover: real value
    assert list(_trace(shown[FRONTIER], "below the axis").x) == [7000]


def test_the_winner_is_marked_where_it_is_plotted(outlier: optuna.Study) -> None:
    shown, meta = figures(outlier), StudyMeta.of(outlier)
    recs = search_records(outlier)
    best = best_record(recs, meta, "handmade")
    assert best.number == 1 and winner(recs, meta, "handmade") is best
    frontier = _trace(shown[FRONTIER], "winner")
    assert list(frontier.x) == [best.params] and list(frontier.y) == [best.mean_val()] and frontier.text[0]
    history = _trace(shown[HISTORY], "winner")
    assert list(history.x) == [30.0] and list(history.y) == [best.val_score]  # its own run, finished 30 min in
    assert [t.name for t in shown[HISTORY].data].count(history.name) == 1


def test_a_smallest_goal_marks_its_pick_and_draws_its_val_target() -> None:
    goal, storage = Goal("smallest", 0.99), optuna.storages.InMemoryStorage()
    study = _study([_trained(0, "complete", 6000, [0.98, 0.991, 0.991, 0.991], (0, 10)),
                    _trained(1, "complete", 9000, [0.98, 0.994, 0.994, 0.994], (0, 20)),
                    _trained(2, "pruned", 4000, [0.95], (0, 2))], goal, storage)
    _confirm(storage, "handmade", [(0, 1, 0.9905), (1, 1, 0.9945)])
    shown, meta, recs = figures(study), StudyMeta.of(study), search_records(study)
    pick = smallest_record(recs, meta, "handmade", goal.target)
    assert pick.number == 0 and best_record(recs, meta, "handmade").number == 1  # the smallest pass, not the best
    assert list(_trace(shown[FRONTIER], "winner").x) == [6000] and list(_trace(shown[HISTORY], "winner").x) == [10.0]
    for title in (HISTORY, FRONTIER, CURVES):
        assert _hlines(shown[title]) == [goal.target], title
        lo, hi = shown[title].layout.yaxis.range
        assert lo < goal.target < hi, title


def test_an_accuracy_goal_draws_no_test_target_on_validation_axes(synthetic_figures: dict) -> None:
    for title in (HISTORY, FRONTIER, CURVES):
        assert _hlines(synthetic_figures[title]) == [], title  # the mission's 99.4 % is a test target: no line at all


def test_history_plots_what_each_trial_told_against_wall_clock(outlier: optuna.Study) -> None:
    history = figures(outlier)[HISTORY]
    told_trace, best_line = history.data[0], _trace(history, "best complete score so far")
    recs = {r.number: r for r in search_records(outlier)}
    assert list(told_trace.x) == [10.0, 30.0, 7.0, 45.0]  # minutes from the first start to each trial's finish
    assert list(told_trace.y) == [recs[0].val_score, recs[1].val_score, 0.30, recs[3].val_score]  # pruned: last val
    assert list(best_line.x) == [10.0, 30.0, 45.0]  # complete trials only, in the order they finished
    assert list(best_line.y) == [recs[0].val_score, recs[1].val_score, recs[1].val_score]


def test_a_pruned_run_never_sets_the_best_so_far_nor_shows_test_accuracy() -> None:
    study = _study([_trained(0, "complete", 6000, [0.99, 0.991, 0.991, 0.991], (0, 10)),
                    _trained(1, "pruned", 7000, [0.98, 0.999], (1, 3))])
    history = figures(study)[HISTORY]
    assert 0.999 in history.data[0].y and 0.993 not in history.data[0].y  # its last val, never its test accuracy
    assert max(_trace(history, "best complete score so far").y) == pytest.approx(0.991)


def test_unevaluated_epochs_are_skipped_everywhere() -> None:
    gappy = [0.97, None, 0.985, None, 0.99, 0.991, 0.992]
    study = _study([_trained(0, "complete", 6000, gappy, (0, 10)),
                    _trained(1, "pruned", 7000, [0.96, None, 0.975, None], (1, 3)),
                    _trained(2, "diverged", 8000, [None], (2, 4))])
    recs = search_records(study)
    assert [told(r) for r in recs] == [pytest.approx(0.991), 0.975, None]  # the last *evaluated* epoch; none: untold
    curves = figures(study)[CURVES]
    by_name = {t.name: t for t in curves.data}
    assert list(by_name["trial 0 (complete)"].x) == [1, 3, 5, 6, 7]
    assert list(by_name["trial 1 (pruned)"].x) == [1, 3] and list(by_name["trial 1 (pruned)"].y) == [0.96, 0.975]
    assert "trial 2 (diverged)" not in by_name
    assert all(v is not None for t in curves.data for v in t.y)
    assert list(figures(study)[HISTORY].data[0].y) == [pytest.approx(0.991), 0.975]


def test_learning_curves_have_distinct_colours_and_dashed_prunings(synthetic: optuna.Study,
                                                                   synthetic_figures: dict) -> None:
    curves = synthetic_figures[CURVES]
    recs = search_records(synthetic)
    complete = sorted((r for r in recs if r.status == "complete"), key=lambda r: -r.mean_val())
    names = [t.name for t in curves.data]
    assert names[:report.TOP_CURVES] == [f"trial {r.number} (complete)" for r in complete[:report.TOP_CURVES]]
    assert all(n.endswith("(pruned)") for n in names[report.TOP_CURVES:]) and len(names) > report.TOP_CURVES
    colours = [t.line.color for t in curves.data]
    assert len(set(colours)) == len(colours)
    assert {t.line.dash for t in curves.data if t.name.endswith("(pruned)")} == {"dash"}
    values = [v for r in complete[:report.TOP_CURVES] for v in report._curve(r).values()]
    lo, hi = curves.layout.yaxis.range
    assert lo <= min(values) and max(values) <= hi <= 1.0005


def test_frontier_shows_confirmed_means_the_pareto_front_and_rejects_only_as_counts(small: optuna.Study) -> None:
    frontier = figures(small)[FRONTIER]
    recs = search_records(small)
    scored = [x for t in frontier.data if t.type == "scatter" for x in t.x]
    assert 25000 not in scored and 31000 not in scored  # rejects were never trained: no score is plotted for them
    rejects = _trace(frontier, "rejected by size")
    assert rejects.type == "histogram" and rejects.yaxis == "y2" and sorted(rejects.x) == [25000, 31000]
    assert frontier.layout.xaxis.range[1] >= 31000
    front = _trace(frontier, "Pareto front")
    assert list(front.x) == [r.params for r in pareto_front(recs)]
    complete = _trace(frontier, "complete")
    assert sorted(complete.x) == [8000, 12000, 18000] and set(complete.marker.symbol) == {"circle-open"}  # 1 seed each
    stopped = _trace(frontier, "pruned or diverged")
    assert sorted(zip(stopped.x, stopped.y, strict=True)) == [(9000, 0.95), (11000, 0.9), (15000, 0.975)]


def test_zoom_never_claims_more_than_100_percent() -> None:
    lo, hi = zoom([0.9995, 0.999], [0.5, 0.9995], None)
    assert 0.99 < lo < 0.999 and hi <= 1.0005


# --- Importances and parallel coordinates ------------------------------------------------------------

def test_importances_rest_on_every_trained_trial_with_merged_learning_rates(synthetic: optuna.Study,
                                                                           synthetic_figures: dict) -> None:
    bars = synthetic_figures[IMPORTANCES].data[0]
    trained = [t for t, r in zip(synthetic.trials, records(synthetic.trials), strict=True) if r.trained]
    params = set().union(*(t.params for t in trained))
    assert "lr" in bars.y and not any(p.endswith("_lr") for p in bars.y)  # one rate for every optimizer
    assert set(bars.y) <= (params - {"sgd_lr", "adam_lr", "adamw_lr"}) | {"lr"}
    trained = [r for r in search_records(synthetic) if r.trained]
    assert len(trained) >= report.MIN_IMPORTANCE_TRIALS and any(r.status == "pruned" for r in trained)
    assert f"of {len(trained)} trained trials" in synthetic_figures[IMPORTANCES].layout.title.text
    assert "PED-ANOVA" in synthetic_figures[IMPORTANCES].layout.title.text


def test_few_trained_trials_get_a_note_not_importances(small: optuna.Study) -> None:
    assert sum(r.trained for r in search_records(small)) < report.MIN_IMPORTANCE_TRIALS
    assert isinstance(figures(small)[IMPORTANCES], str)


def test_parallel_coordinates_draw_pruned_trials_and_only_varying_axes(synthetic: optuna.Study,
                                                                      synthetic_figures: dict) -> None:
    fig = synthetic_figures[PARALLEL]
    lines = [t for t in fig.data if t.mode == "lines"]
    trained = [r for r in search_records(synthetic) if r.trained]
    assert len(lines) == len(trained)
    axes = list(fig.layout.xaxis.ticktext)
    assert "status" in axes and 3 <= len(axes) <= report.PARALLEL_AXES + 2
    statuses = {dict(map(tuple, t.customdata))["status"] for t in lines}
    assert {"complete", "pruned"} <= statuses
    for axis in axes[1:]:  # every parameter axis varies among the lines drawn
        assert len({dict(map(tuple, t.customdata)).get(axis) for t in lines}) > 1, axis


def test_an_empty_study_draws_no_axis() -> None:
    study = _study([_rejected(25000), _rejected(None), create_trial(state=TrialState.FAIL)])
    assert figures(study) == dict.fromkeys(report.TITLES, NO_TRAINED)
    assert isinstance(winner(search_records(study), StudyMeta.of(study), "handmade"), str)


# --- Tables ------------------------------------------------------------------------------------------

def test_rejects_are_counted_by_kind_with_their_sizes(small: optuna.Study) -> None:
    rejects = summary(small, search_records(small), StudyMeta.of(small))["Rejected before training (3)"]
    assert rejects.loc["over budget", ["trials", "smallest", "largest"]].tolist() == [2, 25000, 31000]
    assert rejects.loc["does not fit", "trials"] == 1


def test_summary_counts_statuses_and_never_claims_zero_seconds(small: optuna.Study) -> None:
    by_status = summary(small, search_records(small), StudyMeta.of(small))["Trials by status"]
    assert by_status["trials"].to_dict() == {"complete": 3, "pruned": 2, "rejected": 3, "diverged": 1, "failed": 1}
    assert by_status.loc["complete", "minutes"] == 2.0 and by_status.loc["pruned", "minutes"] == 0.7
    assert by_status.loc["rejected", "recorded"] == 0 and pd.isna(by_status.loc["rejected", "minutes"])


def test_summary_says_how_the_study_ran(small: optuna.Study) -> None:
    meta = StudyMeta.of(small)
    assert isinstance(summary(small, search_records(small), meta)["How it ran"], str)  # not recorded: says so
    runtime = [{"device": "cuda", "device_name": "H100", "precision": "bf16", "channels_last": True, "workers": 4,
                "threads": 8, "torch": "2.9"}]
    small.set_user_attr("runtime", runtime)
    ran = summary(small, search_records(small), StudyMeta.of(small))["How it ran"]
    assert ran.to_dict("records") == runtime


def test_summary_says_when_the_target_was_first_reached() -> None:
    trials = [_trained(0, "complete", 6000, [0.99, 0.993, 0.993, 0.993], (0, 10)),   # score 0.993: misses 99.4 %
              _trained(1, "complete", 9000, [0.99, 0.994, 0.995, 0.996], (5, 30)),   # score 0.995, finished 30 min in
              _trained(2, "complete", 12000, [0.99, 0.995, 0.996, 0.997], (6, 45)),  # also passes, but finished later
              _trained(3, "pruned", 7000, [0.996], (1, 2))]                           # a pruned trial has no score
    study = _study(trials)
    first = summary(study, search_records(study), StudyMeta.of(study))[f"First val score ≥ {TARGET_ACC:.2%}"]
    assert first.to_dict("records") == [{"trial": 1, "minutes after the first start": 30.0}]
    study = _study(trials[:1])
    first = summary(study, search_records(study), StudyMeta.of(study))[f"First val score ≥ {TARGET_ACC:.2%}"]
    assert isinstance(first, str)  # a note, not a table


def test_best_trial_shows_its_recipe_in_words_and_an_unconfirmed_checklist(small: optuna.Study) -> None:
    meta = StudyMeta.of(small)
    best = winner(search_records(small), meta, "handmade")
    assert best.number == 6
    frames = candidate_frames(best, meta)
    recipe = dict(frames["Training recipe"].values.tolist())
    words = labels()
    assert recipe[words["batch_size"]] == 64 and recipe[words["schedule"]] == "step" and recipe[words["drop_at"]] == 0.6
    assert set(recipe) == set(words.values())
    marks = frames["Checklist"].iloc[:, 0].tolist()
    assert marks == ["✓"] * 5 + ["?"]  # one seed: the accuracy line is unconfirmed, never passed
    scores = dict(frames["Scores and architecture"].values.tolist())
    assert scores["parameters"] == "18,000" and scores["blocks"] == str(((8, 16), (16, 16, 16, 16)))


def test_the_best_is_the_best_mean_over_seeds_with_each_seed_run() -> None:
    storage = optuna.storages.InMemoryStorage()
    study = _study([_trained(0, "complete", 9000, [0.99, 0.995, 0.995, 0.995]),
                    _trained(1, "complete", 12000, [0.99, 0.994, 0.994, 0.994])], storage=storage)
    _confirm(storage, "handmade", [(0, 1, 0.990), (0, 2, 0.990), (1, 1, 0.994)])
    meta = StudyMeta.of(study)
    best = winner(search_records(study), meta, "handmade")
    assert best.number == 1 and best.n_seeds == 2
    seeds = candidate_frames(best, meta)["Seeds"]
    assert seeds["run"].tolist() == ["search trial 1", "confirm run 2"]
    assert candidate_frames(best, meta)["Checklist"].iloc[-1, 0] == "✓"  # 2 seeds: confirmed, and it passes


def test_a_smallest_goal_without_a_confirmed_pass_says_why(small: optuna.Study) -> None:
    small.set_user_attr("goal", {"kind": "smallest", "target": 0.999})
    pick = winner(search_records(small), StudyMeta.of(small), "handmade")
    assert isinstance(pick, str) and "99.90%" in pick
    assert not [t for t in figures(small)[FRONTIER].data if t.name and t.name.startswith("winner")]


def test_smallest_goal_figures_plot_val_scores_not_the_scalarized_value(tmp_path: Path) -> None:
    study = synthetic_study(goal=Goal("smallest", 0.988))
    by_number = {r.number: r for r in search_records(study)}
    scalarized = [t for t in study.trials
                  if t.state == TrialState.COMPLETE and t.value != by_number[t.number].val_score]
    assert scalarized  # the study has trials whose value is not their val score
    history = figures(study)[HISTORY].data[0]
    told_values = [told(r) for r in by_number.values() if told(r) is not None]
    assert list(history.y) == told_values
    assert all(t.value not in history.y for t in scalarized)


def test_tables_show_missing_values_blank() -> None:
    html = report._html(pd.DataFrame({"val_score": [0.99123, None], "seeds": pd.array([3, None], dtype="Int64")}))
    assert "99.12%" in html and "nan" not in html.lower() and "&lt;NA&gt;" not in html and "None" not in html
