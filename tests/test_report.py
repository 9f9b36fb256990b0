"""The HTML report, on synthetic studies (no training): sections, words, honest counts and axes, offline plotly.js.

`synthetic_study` samples the real search space with a fake objective that records what the real one records
(through `record.write`), so the report sees real parameter names, distributions, rejects and seed runs.
"""

from __future__ import annotations

import datetime
import json
import random
import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from nas20k import report
from nas20k.factory import SpecError
from nas20k.objective import Budget, Goal
from nas20k.record import SCORE_EPOCHS, records, write
from nas20k.report import COLUMNS, param_label, pareto_front, trials_frame, write_report
from nas20k.space import Candidate, suggest
from nas20k.study import CONFIRM_SUFFIX, search_records
from nas20k.train import TrainConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPEC = {"blocks": [[8, 16], [16, 16, 16, 16]], "transitions": [8], "head": "gap", "dropout": 0.05, "dropout_after": [1, 5]}
BUDGET = Budget(max_params=20_000, max_epochs=20)
SECTIONS = ["Summary", "Best trial", "Search", "Trials", "Optimization history", "Accuracy vs parameters", "Learning curves",
            "Hyper-parameter importances", "Parallel coordinates"]


# --- Synthetic studies -----------------------------------------------------------------------------

def _history(accs: list[float], test: float | None = 0.993) -> list[dict]:
    """Per-epoch records as the trainer writes them: test accuracy only in the last SCORE_EPOCHS epochs."""
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
        write(trial, history=_history(accs[:2], test=None), status="diverged", reason="diverged: loss became NaN/inf in epoch 3", seconds=25.0)
        raise optuna.TrialPruned("diverged")
    history = _history(accs, test=round(final + 0.001, 5))
    score = sum(accs[-SCORE_EPOCHS:]) / SCORE_EPOCHS
    write(trial, history=history, status="complete", reason=f"val score {score:.2%}", val_score=score, test_acc=final + 0.001,
          test_acc_last3=final + 0.0008, seconds=10.0 * len(accs), weights="w")
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
    study = optuna.create_study(study_name="synthetic", storage=storage, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    study.set_user_attr("budget", {"max_params": budget.max_params, "max_epochs": budget.max_epochs})
    study.set_user_attr("goal", {"kind": goal.kind, "target": goal.target})
    study.optimize(lambda t: _fake_objective(budget, goal, t), n_trials=n)
    complete = sorted((r for r in search_records(study) if r.status == "complete"), key=lambda r: -r.val_score)[:confirm_top]
    _confirm(storage, "synthetic", [(r.number, s, r.val_score - 0.0004 * s) for r in complete for s in (1, 2)])
    return study


def _candidate(**train: object) -> dict:
    return Candidate.from_dict({"spec": SPEC, "train": TrainConfig(**train).to_dict()}).to_dict()


def _trained(i: int, status: str, params: int, accs: list[float], **train: object) -> FrozenTrial:
    """A hand-made trained trial; score = mean of the last 3 epochs if complete."""
    attrs = {"status": status, "reason": status, "params": params, "macs": 10 * params, "seconds": 10.0 * len(accs),
             "history": _history(accs), "candidate": _candidate(**train)}
    value = None
    if status == "complete":
        value = sum(accs[-3:]) / len(accs[-3:])
        attrs |= {"val_score": value, "test_acc": 0.9951, "test_acc_last3": 0.9949}
    elif accs:  # Optuna keeps a pruned trial's last intermediate value as its value
        value = accs[-1]
    return create_trial(state=TrialState.COMPLETE if status == "complete" else TrialState.PRUNED, value=value,
                        user_attrs=attrs, intermediate_values=dict(enumerate(accs, 1)))


def _rejected(params: int | None) -> FrozenTrial:
    reason = (f"over budget: {params:,} params >= 20,000" if params else
              "spec does not fit a 28x28 image: conv 1 of block 3 gets 2x2 input, needs at least 3x3")
    attrs = {"status": "rejected", "reason": reason, "candidate": _candidate()} | ({"params": params} if params else {})
    return create_trial(state=TrialState.PRUNED, user_attrs=attrs)


def _study(trials: list[FrozenTrial], goal: Goal = Goal()) -> optuna.Study:
    study = optuna.create_study(study_name="handmade", direction="maximize")
    study.set_user_attr("budget", {"max_params": 20000, "max_epochs": 20})
    study.set_user_attr("goal", {"kind": goal.kind, "target": goal.target})
    for t in trials:
        study.add_trial(t)
    return study


@pytest.fixture(scope="module")
def synthetic() -> optuna.Study:
    return synthetic_study()


@pytest.fixture(scope="module")
def synthetic_html(synthetic: optuna.Study, tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_report(synthetic, tmp_path_factory.mktemp("report") / "report.html").read_text(encoding="utf-8")


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


def _section(html: str, heading: str) -> str:
    """The HTML from a heading to the next heading of the same level or higher."""
    level = re.search(rf"<h(\d)[^>]*>{re.escape(heading)}", html).group(1)
    rest = html.split(re.search(rf"<h{level}[^>]*>{re.escape(heading)}[^<]*</h{level}>", html).group(0), 1)[1]
    return re.split(rf"<h[1-{level}][ >]", rest, maxsplit=1)[0]


def _in_figure(text: str, html: str) -> bool:
    """`text` inside a figure's JSON (plotly escapes non-ASCII and slashes there)."""
    return json.dumps(text)[1:-1].replace("/", "\\/") in html


# --- The page ---------------------------------------------------------------------------------------

def test_report_has_every_section_and_opens_offline(synthetic_html: str, tmp_path: Path) -> None:
    for title in SECTIONS:
        assert re.search(rf"<h[23][^>]*>{re.escape(title)}", synthetic_html), title
    assert synthetic_html.count('class="plotly-graph-div"') == 5  # every figure drawn: enough trials for each
    assert "plotly.js" in synthetic_html and len(synthetic_html) > 1_000_000
    assert not re.search(r"<(script|link)[^>]*(src|href)=", synthetic_html)  # nothing fetched: opens offline
    for words in ["best so far", "Pareto front", "parameter budget (20,000)", "99.4 % target (mission, on test accuracy)",
                  "pruned or diverged (val at last epoch, not a score)", "confirmed (≥ 2 seeds: mean ± sd)"]:
        assert _in_figure(words, synthetic_html), words


def test_every_search_parameter_is_in_words() -> None:
    names: set[str] = set()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (suggest(t, 20), 0.0)[1], n_trials=300)
    for t in study.trials:
        names |= set(t.params)
    assert {"b3_w2", "t2", "t2_width", "drop_at", "nesterov", "squeeze_bn", "adamw_lr"} <= names  # the sample covers the space
    for name in names | {"lr"}:
        label = param_label(name)
        assert label.endswith(f"({name})") and len(label) > len(name) + 6, label
    assert param_label("b2_w1") == "block 2, conv 1 width (b2_w1)"
    assert param_label("t1") == "transition 1: pool or 1x1 squeeze (t1)"
    assert param_label("drop_at") == "step schedule: drop at fraction of epochs (drop_at)"


def test_importances_use_every_trained_trial_and_label_every_bar(synthetic: optuna.Study, synthetic_html: str) -> None:
    recs = search_records(synthetic)
    trained = [r for r in recs if r.trained]
    pruned = sum(r.status in ("pruned", "diverged") for r in trained)
    assert len(trained) >= 10 and pruned >= 3
    assert f"From {len(trained)} trained trials ({len(trained) - pruned} completed at their val score, {pruned} pruned or diverged" in synthetic_html
    values, about = report._importances(trained, {t.number: t for t in synthetic.trials})
    fig = report._importances_figure(values)
    labels = [param_label(p) for p in values]
    assert list(fig.data[0].y) == labels and list(fig.layout.yaxis.tickvals) == labels  # one tick per bar: none skipped
    assert fig.layout.height >= 26 * len(labels)
    assert all("_" not in label.split(" (")[0] for label in labels)


def test_few_trained_trials_get_a_note_not_importances(small: optuna.Study, tmp_path: Path) -> None:
    html = write_report(small, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Hyper-parameter importances: not computed: they need at least 10 trained trials (completed, pruned or diverged), the study has 6." in html
    assert "share of importance" not in html
    # Its trials carry no search parameters: no parallel plot of two axes either.
    assert "Parallel coordinates: no search parameter is both set in 80% of the trained trials and varied among them." in html


def test_parallel_coordinates_include_pruned_trials_and_no_collapsed_axis(synthetic: optuna.Study) -> None:
    recs = search_records(synthetic)
    trained = [r for r in recs if r.trained]
    fig, about = report._parallel_figure(trained, {t.number: t for t in synthetic.trials}, None)
    dims = fig.data[0].dimensions
    status = dims[0]
    drawn = [status.ticktext[int(v)] for v in status.values]
    assert "pruned" in drawn and "complete" in drawn
    assert len(dims) >= 5
    for d in dims[1:]:
        assert len(set(d.values)) > 1, d.label  # every axis varies
        assert "(" in d.label or d.label.startswith("validation"), d.label  # in words
        assert all(len(line) <= 20 for line in d.label.split("<br>")), d.label  # short lines: neighbours never overlap
    assert len(status.values) >= 0.8 * len(trained)
    assert about.startswith(f"{len(status.values)} of {len(trained)} trained trials drawn")


def test_rejects_are_counted_with_their_reasons_not_plotted_as_scores(small: optuna.Study, tmp_path: Path) -> None:
    html = write_report(small, tmp_path / "r.html").read_text(encoding="utf-8")
    rejects = _section(html, "Rejected before training (3)")
    assert '<td>over budget</td><td class="num">2</td><td class="num">25,000 – 31,000</td>' in rejects
    assert '<td>does not fit 28x28</td><td class="num">1</td><td class="num">-</td>' in rejects
    fig = report._params_figure(search_records(small), report.study_budget(small), report._targets(Goal()))
    hist = [t for t in fig.data if t.type == "histogram"]
    assert len(hist) == 1 and sorted(hist[0].x) == [25000, 31000] and hist[0].yaxis == "y2"
    scatter_x = [x for t in fig.data if t.type == "scatter" for x in t.x]
    assert 25000 not in scatter_x and 31000 not in scatter_x  # never at a made-up accuracy


def test_summary_counts_statuses_and_never_claims_zero_seconds(small: optuna.Study, tmp_path: Path) -> None:
    html = write_report(small, tmp_path / "r.html").read_text(encoding="utf-8")
    counts = {"complete": 3, "pruned": 2, "rejected": 3, "diverged": 1, "failed": 1, "running": 0}
    for name, n in counts.items():
        assert f"<td>{name}</td><td>{n}</td>" in html
    assert "<th>total</th><th>10</th>" in html
    assert '<td>rejected</td><td>3</td><td class="num">not recorded</td>' in html
    assert '<td>failed</td><td>1</td><td class="num">not recorded</td>' in html
    assert '<td>complete</td><td>3</td><td class="num">2 min 00 s</td>' in html
    assert "(6 of 10 recorded)" in html
    assert "0 min 00 s" not in _section(html, "Summary").split("Wall time")[0]


def test_empty_study_says_so_and_draws_no_axis(tmp_path: Path) -> None:
    study = _study([_rejected(25000), _rejected(None), create_trial(state=TrialState.FAIL)])
    html = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "plotly-graph-div" not in html  # no figure, so no 0-150 % axis
    assert html.count(report.NO_TRAINED) == 3
    assert "need at least 5 trained trials, the study has 0" in html
    assert "they need at least 10 trained trials (completed, pruned or diverged), the study has 0" in html
    assert "has no completed trial yet" in _section(html, "Best trial")
    assert '<td>rejected</td><td>2</td><td class="num">not recorded</td>' in html


def test_accuracy_axes_never_pass_100_percent() -> None:
    axis = report._acc_axis([0.9995, 0.999], report._targets(Goal()))
    assert axis["range"][1] <= 1.0005 and axis["range"][0] < 0.994


def test_trials_table_is_sortable_with_test_accuracy_and_seeds(synthetic: optuna.Study, synthetic_html: str) -> None:
    table = _section(synthetic_html, "Trials")
    assert 'class="sortable"' in table and "<thead>" in table
    for column in ["val score", "seeds", "mean val ± sd", "test acc (final)", "test acc, last 3 (mean over seeds)"]:
        assert f"<th>{column}</th>" in table
    recs = search_records(synthetic)
    assert table.count("<tr><td data-v=") == len(recs)
    confirmed = [r for r in recs if r.n_seeds == 3]
    assert len(confirmed) == 3
    r = confirmed[0]
    assert f'<td data-v="{r.mean_val()}" class="num">{r.mean_val():.2%} ± {r.sd_val():.2%}</td>' in table
    assert f'<td data-v="{r.test_acc}" class="num">{r.test_acc:.2%}</td>' in table
    assert "th.dataset.dir" in synthetic_html  # the inline sort script


def test_best_trial_shows_its_recipe_next_to_its_spec(small: optuna.Study, tmp_path: Path) -> None:
    html = write_report(small, tmp_path / "r.html").read_text(encoding="utf-8")
    best = _section(html, "Best trial")
    assert "<th>trial</th><td>6</td>" in best and "<th>parameters</th><td>18,000</td>" in best
    assert "<h4>Architecture</h4>" in best and "<h4>Training recipe</h4>" in best
    assert "<th>3x3 conv widths, by block</th><td>8-16 | 16-16-16-16</td>" in best
    for label, value in [("batch size", "64"), ("learning-rate schedule", "step"), ("step schedule: drop 10x at fraction of epochs", "0.6"),
                         ("peak learning rate", "0.05"), ("augmentation: rotation, ± degrees", "10")]:
        assert f"<th>{label}</th><td>{value}</td>" in best, label
    assert "<th>test accuracy, final weights (this seed)</th><td>99.51%</td>" in best
    assert best.count("✓") == 6 and "✗" not in best


def test_best_is_the_best_mean_over_seeds(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.add_trial(_trained(0, "complete", 9000, [0.99, 0.995, 0.995, 0.995]))
    study.add_trial(_trained(1, "complete", 12000, [0.99, 0.994, 0.994, 0.994]))
    _confirm(storage, "s", [(0, 1, 0.990), (0, 2, 0.990), (1, 1, 0.994)])
    best = _section(write_report(study, tmp_path / "r.html").read_text(encoding="utf-8"), "Best trial")
    assert "<th>trial</th><td>1</td>" in best and "over 2 seed(s)" in best
    assert "<td>search trial 1</td>" in best and "<td>confirm run 2</td>" in best  # which study ran each seed


def test_smallest_goal_plots_val_scores_and_shows_the_smallest(tmp_path: Path) -> None:
    goal = Goal("smallest", 0.993)
    study = synthetic_study(goal=goal)
    html = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "99.3 % goal: smallest net whose val score reaches it" in html and "99.4 % target (mission, on test accuracy)" in html
    best = _section(html, "Best trial")
    assert "Smallest net reaching the goal" in best
    recs = search_records(study)
    fig = report._history_figure(recs, report._targets(goal))
    complete = next(t for t in fig.data if t.name == "complete (val score)")
    by_number = {r.number: r for r in recs}
    assert list(complete.y) == [by_number[n].val_score for n in complete.x]  # never the scalarized trial.value
    passing = [t for t in study.trials if t.state == TrialState.COMPLETE and t.value != by_number[t.number].val_score]
    assert passing  # the study has trials whose value is not their val score


def test_smallest_goal_without_a_confirmed_pass_says_so(small: optuna.Study, tmp_path: Path) -> None:
    small.set_user_attr("goal", {"kind": "smallest", "target": 0.999})
    best = _section(write_report(small, tmp_path / "r.html").read_text(encoding="utf-8"), "Best trial")
    assert "no candidate with a confirmed mean val score &gt;= 99.90%" in best


def test_trials_frame_keeps_its_columns(small: optuna.Study) -> None:
    frame = trials_frame(search_records(small))
    assert list(frame.columns) == COLUMNS and len(frame) == 10


def test_pareto_front_keeps_the_smallest_net_per_accuracy() -> None:
    points = {  # trial number: (params, score)
        0: (5000, 0.980),
        1: (7000, 0.975),  # more params, lower score than 0: dominated
        2: (9000, 0.990),
        3: (9000, 0.985),  # same params as 2, lower score: dominated
        4: (12000, 0.990),  # same score as 2, more params: dominated
        5: (15000, 0.994),
        6: (15000, 0.994),  # identical to 5: neither dominates the other
        7: (4000, 0.960),  # smallest of all: on the front however low it scores
    }
    trials = [_trained(n, "complete", p, [s]) for n, (p, s) in points.items()]
    trials.append(_trained(8, "pruned", 1000, [0.999]))  # not complete: never on the front
    for n, t in enumerate(trials):
        t.number = n
    assert [r.number for r in pareto_front(records(trials))] == [7, 0, 2, 5, 6]


def test_summary_says_when_the_target_was_first_reached(tmp_path: Path) -> None:
    start = datetime.datetime(2026, 1, 1, 12, 0)
    trials = [_trained(0, "complete", 6000, [0.99, 0.993, 0.993, 0.993]),   # score 0.993: misses 99.4 %
              _trained(1, "complete", 9000, [0.99, 0.994, 0.995, 0.996]),   # score 0.995, finished 30 min in
              _trained(2, "complete", 12000, [0.99, 0.995, 0.996, 0.997]),  # also passes, but finished later
              _trained(3, "pruned", 7000, [0.996])]                         # a pruned trial has no score
    for t, (begin, end) in zip(trials, [(0, 10), (5, 30), (6, 45), (1, 2)]):
        t.datetime_start, t.datetime_complete = start + datetime.timedelta(minutes=begin), start + datetime.timedelta(minutes=end)
    html = write_report(_study(trials), tmp_path / "r.html").read_text(encoding="utf-8")
    assert "First val score &ge; 99.40%: trial #1, 30 min 00 s after the study's first trial started" in _section(html, "Summary")
    html = write_report(_study(trials[:1]), tmp_path / "r.html").read_text(encoding="utf-8")
    assert "No trial has reached a val score of 99.40% yet." in html
