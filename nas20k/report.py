"""The study as a table (pandas) and as one offline HTML page of plotly figures."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from html import escape
from pathlib import Path

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.offline import get_plotlyjs

from nas20k.export import ExportError, best_trial, study_budget, trial_checklist
from nas20k.objective import TARGET_ACC
from nas20k.study import status

COLUMNS = [
    "trial", "status", "params", "epochs", "val_score", "val_acc", "test_acc", "seconds", "macs",
    "blocks", "transitions", "head", "dropout", "optimizer", "lr", "batch_size", "schedule", "reason",
]


def _arch(widths: list[list[int]]) -> str:
    return " | ".join("-".join(map(str, b)) for b in widths)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial; test accuracy only for completed trials (it is recorded, never used)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        cand = a.get("candidate", {"spec": {}, "train": {}})
        spec, cfg = cand["spec"], cand["train"]
        rows.append({
            "trial": t.number,
            "status": status(t),
            "params": a.get("params"),
            "epochs": a.get("epochs", len(a.get("history", []))),
            "val_score": t.value if t.state == TrialState.COMPLETE else None,  # Optuna keeps a pruned trial's last report as its value
            "val_acc": a.get("history", [{}])[-1].get("val_acc") if a.get("history") else None,
            "test_acc": a.get("test_acc"),
            "seconds": a.get("seconds"),
            "macs": a.get("macs"),
            "blocks": _arch(spec.get("blocks", [])),
            "transitions": "-".join(map(str, spec.get("transitions", []))),
            "head": spec.get("head"),
            "dropout": spec.get("dropout"),
            "optimizer": cfg.get("optimizer"),
            "lr": cfg.get("lr"),
            "batch_size": cfg.get("batch_size"),
            "schedule": cfg.get("schedule"),
            "reason": a.get("reason", ""),
        })
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"params": "Int64", "epochs": "Int64", "macs": "Int64", "batch_size": "Int64"})


# --- The HTML report -------------------------------------------------------------------------------

STATUSES = ("complete", "pruned", "rejected", "diverged", "failed", "running")
PARALLEL_PARAMS = ("blocks", "head", "dropout", "optimizer", "batch_size", "schedule", "weight_decay", "rotate")
TARGET_LABEL = f"{TARGET_ACC * 100:g} % target"
TOP_CURVES, PRUNED_CURVES = 5, 10
PAGE_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: left; }
td.num { text-align: right; }
.ok { color: #1a7f37; } .fail { color: #cf222e; } .note { color: #666; font-style: italic; }
"""


def write_report(study: optuna.Study, path: Path) -> Path:
    """Write one self-contained HTML page (plotly.js inlined, so it opens offline) describing the study."""
    trials = study.get_trials(deepcopy=False)
    budget = study_budget(study)
    figures = [
        _history_figure(trials),
        _params_figure(trials, budget.max_params),
        _curves_figure(trials),
    ]
    sections = [_figure_html(fig) for fig in figures] + [
        _optuna_section(study, "Hyper-parameter importances", _importances_figure),
        _optuna_section(study, "Parallel coordinates", _parallel_figure),
    ]
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>nas20k report: {escape(study.study_name)}</title>
<style>{PAGE_STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<h1>nas20k report: study {escape(study.study_name)}</h1>
<p>Budget: fewer than {budget.max_params:,} parameters, at most {budget.max_epochs} epochs; target {TARGET_ACC:.1%} test accuracy.
Trials are selected by validation score only; test accuracy is shown for the record.</p>
<h2>Summary</h2>
{_summary_html(trials)}
<h2>Best trial</h2>
{_best_html(study)}
<h2>Search</h2>
{"".join(sections)}
</body>
</html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def pareto_front(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The completed trials no other completed trial beats on both counts (fewer-or-equal parameters and
    higher-or-equal score, one strictly), by parameter count: the smallest net for each accuracy level."""
    complete = [t for t in trials if status(t) == "complete" and t.user_attrs.get("params") is not None]
    front: list[FrozenTrial] = []
    best = -math.inf
    # Fewest parameters first, best score first among equals: a trial is dominated exactly when an
    # earlier one scored higher, or scored the same with fewer parameters.
    for t in sorted(complete, key=lambda t: (t.user_attrs["params"], -t.value)):
        ties_last = bool(front) and (front[-1].user_attrs["params"], front[-1].value) == (t.user_attrs["params"], t.value)
        if t.value > best or ties_last:
            front.append(t)
            best = t.value
    return front


def _val_acc(trial: FrozenTrial) -> float | None:
    """Validation accuracy to plot: the score of a completed trial, else its last epoch's (None if untrained)."""
    if status(trial) == "complete":
        return trial.value
    history = trial.user_attrs.get("history")
    return history[-1]["val_acc"] if history else None


def _hover(trial: FrozenTrial) -> str:
    a = trial.user_attrs
    params = f"{a['params']:,} params" if a.get("params") is not None else "no parameter count"
    return f"trial {trial.number} ({status(trial)})<br>{params}<br>{escape(a.get('reason', ''), quote=False)}"


def _add_target_line(fig: go.Figure) -> None:
    fig.add_hline(y=TARGET_ACC, line={"dash": "dot", "color": "green"}, name=TARGET_LABEL, showlegend=True,
                  annotation_text=TARGET_LABEL, annotation_position="bottom right")


def _history_figure(trials: list[FrozenTrial]) -> go.Figure:
    """Score per trial in order, with the best so far: is the search still improving?"""
    complete = [t for t in trials if status(t) == "complete"]
    pruned = [t for t in trials if status(t) == "pruned" and _val_acc(t) is not None]
    best = list(itertools.accumulate((t.value for t in complete), max))
    fig = go.Figure([
        go.Scatter(x=[t.number for t in pruned], y=[_val_acc(t) for t in pruned], mode="markers", name="pruned (last epoch)",
                   marker={"color": "grey", "opacity": 0.35}, hovertext=[_hover(t) for t in pruned], hoverinfo="text+y"),
        go.Scatter(x=[t.number for t in complete], y=[t.value for t in complete], mode="markers", name="complete (score)",
                   marker={"color": "royalblue", "size": 8}, hovertext=[_hover(t) for t in complete], hoverinfo="text+y"),
        go.Scatter(x=[t.number for t in complete], y=best, mode="lines", name="best so far", line={"shape": "hv", "color": "crimson"}),
    ])
    _add_target_line(fig)
    fig.update_layout(title_text="Optimization history", xaxis_title="trial", yaxis_title="validation accuracy", yaxis_tickformat=".2%")
    return fig


def _params_figure(trials: list[FrozenTrial], max_params: int) -> go.Figure:
    """Accuracy against size: where the budget binds, and which nets are the smallest for their accuracy."""
    fig = go.Figure()
    styles = {"complete": {"color": "royalblue", "size": 8}, "pruned": {"color": "grey", "opacity": 0.35},
              "diverged": {"color": "orange", "symbol": "diamond"}}
    for name, marker in styles.items():
        group = [t for t in trials if status(t) == name and _val_acc(t) is not None and t.user_attrs.get("params") is not None]
        fig.add_trace(go.Scatter(x=[t.user_attrs["params"] for t in group], y=[_val_acc(t) for t in group], mode="markers",
                                 name=name, marker=marker, hovertext=[_hover(t) for t in group], hoverinfo="text+y"))
    front = pareto_front(trials)
    fig.add_trace(go.Scatter(x=[t.user_attrs["params"] for t in front], y=[t.value for t in front], mode="lines+markers",
                             name="Pareto front", line={"color": "crimson", "shape": "hv"}, marker={"size": 14, "symbol": "circle-open", "line": {"width": 2}},
                             hovertext=[_hover(t) for t in front], hoverinfo="text+y"))
    # Rejected candidates were never trained: drawn along the bottom edge, on a hidden 0..1 axis.
    rejected = [t for t in trials if status(t) == "rejected" and t.user_attrs.get("params") is not None]
    fig.add_trace(go.Scatter(x=[t.user_attrs["params"] for t in rejected], y=[0.02] * len(rejected), yaxis="y2", mode="markers",
                             name="rejected (over budget)", marker={"symbol": "x", "color": "firebrick"},
                             hovertext=[_hover(t) for t in rejected], hoverinfo="text"))
    fig.add_vline(x=max_params, line={"dash": "dash", "color": "black"}, name="parameter budget", showlegend=True)
    _add_target_line(fig)
    fig.update_layout(title_text="Accuracy vs parameters", xaxis_title="parameters", yaxis_title="validation accuracy",
                      yaxis_tickformat=".2%", yaxis2={"overlaying": "y", "range": [0, 1], "visible": False})
    return fig


def _curves_figure(trials: list[FrozenTrial]) -> go.Figure:
    """Validation accuracy per epoch of the best trials and of some pruned ones: were the prunings fair?"""
    top = sorted((t for t in trials if status(t) == "complete"), key=lambda t: t.value, reverse=True)[:TOP_CURVES]
    pruned = [t for t in trials if status(t) == "pruned" and t.user_attrs.get("history")]
    # The pruned trials that ran longest: the later, harder pruning decisions are the ones worth checking.
    sample = sorted(pruned, key=lambda t: (-len(t.user_attrs["history"]), t.number))[:PRUNED_CURVES]
    fig = go.Figure()
    for t in top + sample:
        history = t.user_attrs.get("history", [])
        faint = status(t) == "pruned"
        fig.add_trace(go.Scatter(x=[h["epoch"] for h in history], y=[h["val_acc"] for h in history], mode="lines+markers",
                                 name=f"trial {t.number} ({status(t)})", opacity=0.45 if faint else 1.0,
                                 line={"dash": "dash" if faint else "solid"}, hovertext=_hover(t), hoverinfo="text+x+y"))
    _add_target_line(fig)
    fig.update_layout(title_text="Learning curves", xaxis_title="epoch", yaxis_title="validation accuracy", yaxis_tickformat=".2%")
    return fig


def _importances_figure(study: optuna.Study) -> go.Figure:
    # PED-ANOVA needs numpy only and handles the conditional space (optuna 4's default, fANOVA, needs scikit-learn).
    with warnings.catch_warnings():  # "few trials in some regimes": true of any small study; read it as a rough guide
        warnings.simplefilter("ignore", UserWarning)
        return optuna.visualization.plot_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())


def _parallel_figure(study: optuna.Study) -> go.Figure:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    params = [p for p in PARALLEL_PARAMS if 2 * sum(p in t.params for t in complete) > len(complete)]
    if not params:
        raise ValueError("no parameter is shared by most completed trials")
    return optuna.visualization.plot_parallel_coordinate(study, params=params)


def _optuna_section(study: optuna.Study, title: str, build: Callable[[optuna.Study], go.Figure]) -> str:
    """Optuna's own figure, or a note saying why it is missing (too few trials, a space it cannot handle)."""
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < 2:
        return _note(f"{title}: needs at least 2 completed trials, the study has {n}.")
    try:
        fig = build(study)
    except Exception as e:  # optuna's plots raise a variety of errors on odd studies; the rest of the page still helps
        return _note(f"{title}: not available ({e.__class__.__name__}: {e}).")
    return _figure_html(fig.update_layout(title_text=title))


def _figure_html(fig: go.Figure) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, default_height="520px", config={"displaylogo": False})


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>\n'


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _summary_html(trials: list[FrozenTrial]) -> str:
    """Trials and compute time by status, and the wall time from the first start to the last finish."""
    by_status: dict[str, list[FrozenTrial]] = {s: [] for s in STATUSES}
    for t in trials:
        by_status.setdefault(status(t), []).append(t)
    seconds = {s: sum(t.user_attrs.get("seconds", 0.0) for t in ts) for s, ts in by_status.items()}
    rows = "".join(f"<tr><td>{escape(s)}</td><td>{len(ts)}</td><td class=\"num\">{_duration(seconds[s])}</td></tr>\n"
                   for s, ts in by_status.items())
    rows += f"<tr><th>total</th><th>{len(trials)}</th><th class=\"num\">{_duration(sum(seconds.values()))}</th></tr>\n"
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = f"Wall time: {_duration((max(ends) - min(starts)).total_seconds())}." if starts and ends else "Wall time: no finished trial yet."
    return f"<table>\n<tr><th>status</th><th>trials</th><th>compute time</th></tr>\n{rows}</table>\n<p>{wall}</p>\n"


def _best_html(study: optuna.Study) -> str:
    """The trial `nas20k best` would export, with the mission's requirement list."""
    try:
        trial = best_trial(study)
    except ExportError as e:
        return _note(str(e))
    a = trial.user_attrs
    spec = a["candidate"]["spec"]
    test_acc = "-" if a.get("test_acc") is None else f"{a['test_acc']:.2%}"
    facts = [
        ("trial", str(trial.number)),
        ("parameters", f"{a['params']:,}"),
        ("validation score", f"{trial.value:.2%}"),
        ("test accuracy", test_acc),
        ("epochs", str(a["epochs"])),
        ("architecture", f"{_arch(spec['blocks'])} (transitions {'-'.join(map(str, spec['transitions']))}, {spec['head']} head)"),
    ]
    rows = "".join(f"<tr><th>{name}</th><td>{escape(value)}</td></tr>\n" for name, value in facts)
    checks = "".join(f'<li class="{"ok" if ok else "fail"}">{"✓" if ok else "✗"} {escape(line)}</li>\n'
                     for line, ok in trial_checklist(study, trial))
    return f"<table>\n{rows}</table>\n<ul>\n{checks}</ul>\n"
