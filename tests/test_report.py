"""The HTML report, on synthetic studies (no training): figures, trace names, counts, offline plotly.js."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from nas20k.report import pareto_front, write_report
from nas20k.train import TrainConfig

SPEC = {"blocks": [[8, 16], [16, 16, 16, 16]], "transitions": [8], "head": "gap", "dropout": 0.05,
        "dropout_after": [1, 5], "in_channels": 1, "image_size": 28, "num_classes": 10}
DISTRIBUTIONS = {
    "batch_size": CategoricalDistribution([64, 128, 256]),
    "optimizer": CategoricalDistribution(["sgd", "adam", "adamw"]),
    "schedule": CategoricalDistribution(["onecycle", "step", "none"]),
    "dropout": FloatDistribution(0.01, 0.25),
}
TITLES = ["Optimization history", "Accuracy vs parameters", "Learning curves", "Hyper-parameter importances", "Parallel coordinates"]


def _sample(i: int) -> dict:
    return {"batch_size": [64, 128, 256][i % 3], "optimizer": ["sgd", "adam", "adamw"][i % 3],
            "schedule": ["onecycle", "step", "none"][i % 3], "dropout": 0.02 + 0.02 * i}


def _trained(i: int, status: str, params: int, accs: list[float]) -> FrozenTrial:
    """A trial as the objective records it: history per epoch, score = mean of the last 3 epochs if complete."""
    history = [{"epoch": e, "train_loss": 0.1, "train_acc": a, "val_acc": a, "seconds": 10.0, "lr": 0.05} for e, a in enumerate(accs, 1)]
    attrs = {"status": status, "reason": status, "params": params, "macs": 10 * params, "epochs": len(accs),
             "seconds": 10.0 * len(accs), "history": history, "candidate": {"spec": SPEC, "train": TrainConfig().to_dict()}}
    value = None
    if status == "complete":
        value = sum(accs[-3:]) / len(accs[-3:])
        attrs |= {"val_acc": accs[-1], "test_acc": 0.9951}
    elif accs:  # Optuna keeps a pruned trial's last intermediate value as its value
        value = accs[-1]
    return create_trial(state=TrialState.COMPLETE if status == "complete" else TrialState.PRUNED, value=value,
                        params=_sample(i), distributions=DISTRIBUTIONS, user_attrs=attrs,
                        intermediate_values=dict(enumerate(accs, 1)))


def _rejected(i: int, params: int | None) -> FrozenTrial:
    attrs = {"status": "rejected", "reason": "over budget" if params else "shape error",
             "candidate": {"spec": SPEC, "train": TrainConfig().to_dict()}}
    if params is not None:
        attrs["params"] = params
    return create_trial(state=TrialState.PRUNED, params=_sample(i), distributions=DISTRIBUTIONS, user_attrs=attrs,
                        constraints={"over_budget": 1.0})


def _study(trials: list[FrozenTrial]) -> optuna.Study:
    study = optuna.create_study(study_name="synthetic", direction="maximize")
    study.set_user_attr("budget", {"max_params": 20000, "max_epochs": 20})
    for t in trials:
        study.add_trial(t)
    return study


@pytest.fixture()
def study() -> optuna.Study:
    return _study([
        _trained(0, "complete", 12000, [0.97, 0.985, 0.99, 0.992]),
        _trained(1, "pruned", 9000, [0.95]),
        _rejected(2, 25000),
        _trained(3, "complete", 8000, [0.96, 0.98, 0.988, 0.989]),
        _trained(4, "pruned", 15000, [0.96, 0.97, 0.975]),
        _rejected(5, None),
        _trained(6, "complete", 18000, [0.98, 0.99, 0.994, 0.995]),
        _trained(7, "diverged", 11000, [0.9]),
        _trained(8, "complete", 16000, [0.97, 0.98, 0.985, 0.986]),  # dominated by trial 0
        create_trial(state=TrialState.FAIL, params=_sample(9), distributions=DISTRIBUTIONS),
    ])


def test_report_has_every_figure_trace_and_count(study: optuna.Study, tmp_path: Path) -> None:
    path = write_report(study, tmp_path / "out" / "report.html")
    assert path == tmp_path / "out" / "report.html"
    html = path.read_text(encoding="utf-8")
    for text in TITLES + ["best so far", "Pareto front", "parameter budget", "rejected (over budget)", "99.4 % target"]:
        assert text in html, text
    assert "plotly.js" in html and path.stat().st_size > 1_000_000
    assert not re.search(r"<script[^>]*src=", html)  # nothing fetched: opens offline
    assert 'class="note"' not in html  # importances and parallel coordinates drawn, not replaced by a note
    counts = {"complete": 4, "pruned": 2, "rejected": 2, "diverged": 1, "failed": 1, "running": 0}
    for name, n in counts.items():
        assert f"<td>{name}</td><td>{n}</td>" in html
    assert "<th>total</th><th>10</th>" in html
    for curve in ["trial 6 (complete)", "trial 0 (complete)", "trial 1 (pruned)", "trial 4 (pruned)"]:
        assert f'"name":"{curve}"' in html, curve


def test_report_shows_best_trial_by_validation_score(study: optuna.Study, tmp_path: Path) -> None:
    html = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    best = html.split("<h2>Best trial</h2>", 1)[1].split("<h2>", 1)[0]
    assert "<th>trial</th><td>6</td>" in best
    assert "<th>parameters</th><td>18,000</td>" in best
    assert "<th>test accuracy</th><td>99.51%</td>" in best
    assert best.count("✓") == 6 and "✗" not in best


def test_report_without_completed_trials_says_so(tmp_path: Path) -> None:
    study = _study([_trained(0, "pruned", 9000, [0.95]), _rejected(1, 30000)])
    html = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "no completed trial yet" in html
    assert "Hyper-parameter importances: needs at least 2 completed trials, the study has 0." in html
    assert "<td>complete</td><td>0</td>" in html and "<td>rejected</td><td>1</td>" in html


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
    for t, n in zip(trials, points):
        t.number = n
    trials.append(_trained(8, "pruned", 1000, [0.999]))  # not complete: never on the front
    trials[-1].number = 8
    assert [t.number for t in pareto_front(trials)] == [7, 0, 2, 5, 6]
