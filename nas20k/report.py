"""The study as a table (pandas) and as one offline HTML page of plotly figures.

The page says what it knows and no more: every figure reads trials through `TrialRecord`s, plots validation
accuracy (a completed trial's score, a pruned one's last epoch, never the scalarized `trial.value` of a
`smallest` goal), states how many trials it rests on, and shows a note instead of an axis it cannot fill.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import math
import re
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import fields
from html import escape
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from nas20k.export import CONFIRMED, ExportError, best_record, record_checklist, smallest_record, study_budget, study_goal
from nas20k.factory import ArchSpec
from nas20k.objective import TARGET_ACC, Budget, Goal
from nas20k.record import STATUSES, TrialRecord
from nas20k.space import LR_RANGE
from nas20k.study import search_records
from nas20k.train import TrainConfig

COLUMNS = [
    "trial", "status", "params", "epochs", "val_score", "seeds", "mean_val", "sd_val", "test_acc", "test_last3", "last_val",
    "seconds", "macs", "blocks", "transitions", "head", "dropout", "optimizer", "lr", "batch_size", "schedule", "warm_start", "reason",
]


def _arch(widths: list[list[int]] | tuple) -> str:
    return " | ".join("-".join(map(str, b)) for b in widths)


def trials_frame(recs: list[TrialRecord]) -> pd.DataFrame:
    """One row per trial; test accuracy only for completed runs (recorded, never used to choose)."""
    rows = []
    for r in recs:
        spec, cfg = (r.candidate.spec, r.candidate.train) if r.candidate else (None, None)
        rows.append({
            "trial": r.number,
            "status": r.status,
            "params": r.params,
            "epochs": r.epochs,
            "val_score": r.val_score,
            "seeds": r.n_seeds or None,
            "mean_val": r.mean_val(),
            "sd_val": r.sd_val(),
            "test_acc": r.test_acc,
            "test_last3": r.mean_test_last3(),
            "last_val": r.last_val,
            "seconds": r.seconds,
            "macs": r.macs,
            "blocks": _arch(spec.blocks) if spec else "",
            "transitions": "-".join(map(str, spec.transitions)) if spec else "",
            "head": spec.head if spec else None,
            "dropout": spec.dropout if spec else None,
            "optimizer": cfg.optimizer if cfg else None,
            "lr": cfg.lr if cfg else None,
            "batch_size": cfg.batch_size if cfg else None,
            "schedule": cfg.schedule if cfg else None,
            "warm_start": r.warm_start or "",
            "reason": r.reason,
        })
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"params": "Int64", "epochs": "Int64", "seeds": "Int64", "macs": "Int64", "batch_size": "Int64"})


# --- Words: what the search parameters and statuses mean ---------------------------------------------

PARAM_LABELS = {
    "head": "head: how the last block becomes 10 logits",
    "blocks": "number of conv blocks",
    "dropout": "dropout rate",
    "dropout_at": "where dropout goes",
    "bias": "3x3 convs have a bias",
    "squeeze_bn": "1x1 convs: bias-free + BatchNorm",
    "optimizer": "optimizer",
    "schedule": "learning-rate schedule",
    "batch_size": "batch size",
    "lr": "peak learning rate (any optimizer)",
    "sgd_lr": "SGD: peak learning rate",
    "adam_lr": "Adam: peak learning rate",
    "adamw_lr": "AdamW: peak learning rate",
    "nesterov": "SGD: Nesterov momentum",
    "weight_decay": "weight decay",
    "drop_at": "step schedule: drop at fraction of epochs",
    "label_smoothing": "label smoothing",
    "rotate": "augmentation: rotation, ± degrees",
    "translate": "augmentation: shift, ± pixels",
}
PARAM_PATTERNS = [  # the per-block names of space.suggest_spec
    (r"b(\d+)_pad", "block {0}: padding 0 or 1"),
    (r"b(\d+)_convs", "block {0}: number of 3x3 convs"),
    (r"b(\d+)_w(\d+)", "block {0}, conv {1} width"),
    (r"t(\d+)", "transition {0}: pool or 1x1 squeeze"),
    (r"t(\d+)_width", "transition {0}: 1x1 squeeze width"),
]
STATUS_MEANING = {
    "complete": "trained every epoch; scored on validation",
    "pruned": "stopped early by the pruner (its last validation accuracy is what it told)",
    "rejected": "never trained: over the parameter budget, or does not fit the image",
    "diverged": "loss became NaN/inf; stopped",
    "interrupted": "stopped by a signal; the next run retrains it (unless it was still sampling)",
    "failed": "crashed (or its worker died)",
    "running": "training now",
    "waiting": "queued",
}
RECIPE_LABELS = {
    "epochs": "epochs",
    "batch_size": "batch size",
    "optimizer": "optimizer",
    "lr": "peak learning rate",
    "momentum": "momentum (SGD only)",
    "nesterov": "Nesterov momentum (SGD only)",
    "weight_decay": "weight decay",
    "schedule": "learning-rate schedule",
    "drop_at": "step schedule: drop 10x at fraction of epochs",
    "label_smoothing": "label smoothing",
    "rotate": "augmentation: rotation, ± degrees",
    "translate": "augmentation: shift, ± pixels",
    "recalibrate_bn": "BatchNorm statistics from clean images, Dropout off, before each evaluation",
    "seed": "training seed",
}


def param_label(name: str) -> str:
    """A search parameter in words, with its name in brackets so the trials' raw params still match."""
    if name in PARAM_LABELS:
        return f"{PARAM_LABELS[name]} ({name})"
    for pattern, words in PARAM_PATTERNS:
        if m := re.fullmatch(pattern, name):
            return f"{words.format(*m.groups())} ({name})"
    return name.replace("_", " ")


# --- The HTML report -------------------------------------------------------------------------------

MIN_IMPORTANCE_TRIALS = 10  # fewer trained trials say more about luck than about parameters
MIN_PARALLEL_TRIALS = 5
PARALLEL_AXES = 7  # parameter axes, besides status and accuracy: more do not fit side by side
PARALLEL_FIRST = ("head", "blocks", "dropout", "optimizer", "lr", "batch_size", "schedule", "weight_decay", "rotate")  # without importances
PARALLEL_SHARE = 0.8  # a parameter gets an axis when this share of trained trials has it
TOP_TRIALS = 5  # importance is that of reaching the top max(10 %, 5 trials)
TOP_CURVES, PRUNED_CURVES = 5, 10
FIGURE_STYLE = {"template": "plotly_white", "font": {"size": 13}, "margin": {"t": 40, "b": 60, "l": 80, "r": 30},
                "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0}}
PAGE_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; }
th { background: #f4f4f4; }
.pair { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 0 2em; align-items: start; }
.pair table { width: 100%; }
.pair h4 { margin: 0.6em 0 0; }
.caption { color: #444; margin: 0 0 0.3em; }
.ok { color: #1a7f37; } .fail { color: #cf222e; } .note { color: #666; font-style: italic; }
.scroll { max-height: 640px; overflow: auto; border: 1px solid #ddd; }
.scroll table { margin: 0; font-size: 0.85em; }
.scroll td { white-space: nowrap; } .scroll td.wrap { white-space: normal; min-width: 20em; }
table.sortable thead th { position: sticky; top: 0; cursor: pointer; user-select: none; }
table.sortable th[data-dir="asc"]::after { content: " ▲"; } table.sortable th[data-dir="desc"]::after { content: " ▼"; }
"""
SORT_SCRIPT = """
document.querySelectorAll("table.sortable thead th").forEach((th, i) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], asc = th.dataset.dir !== "asc";
  th.closest("tr").querySelectorAll("th").forEach(h => delete h.dataset.dir);
  th.dataset.dir = asc ? "asc" : "desc";
  const key = row => { const v = row.cells[i].dataset.v ?? row.cells[i].textContent; return v === "" ? null : isNaN(v) ? v : +v; };
  const rows = [...body.rows].sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);  // empty cells last, either way
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
  });
  body.append(...rows);
}));
"""


def write_report(study: optuna.Study, path: Path) -> Path:
    """Write one self-contained HTML page (plotly.js inlined, so it opens offline) describing the study."""
    recs = search_records(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    budget, goal = study_budget(study), study_goal(study)
    targets = _targets(goal)
    trained = _trained(recs)
    importances = _importances(trained, trials)  # (importance by parameter, what they rest on), or a note
    ranking = importances[0] if isinstance(importances, tuple) else None
    figures = [
        ("Optimization history", "Validation accuracy of each trial in order, with the best score so far: is the search still improving?",
         _history_figure(recs, targets)),
        ("Accuracy vs parameters", "The frontier: each completed net's mean validation score over its seeds (± sd) against its size; "
         "the smallest net for each accuracy level is on the Pareto front. Rejected candidates were never trained: they are counted below, not plotted as scores.",
         _params_figure(recs, budget, targets)),
        ("Learning curves", f"Validation accuracy per epoch of the {TOP_CURVES} best completed trials and of the {PRUNED_CURVES} pruned trials that ran longest: were the prunings fair?",
         _curves_figure(recs, targets)),
        ("Hyper-parameter importances", "Which parameters separate the best trained trials from the rest (PED-ANOVA).",
         (_importances_figure(ranking), importances[1]) if ranking is not None else importances),
        ("Parallel coordinates", "One line per trained trial (pruned ones included, at their last validation accuracy), over the parameters most trials have.",
         _parallel_figure(trained, trials, ranking)),
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
<p>{escape(_mission(budget, goal))}</p>
<p><a href="#summary">Summary</a> · <a href="#best">Best trial</a> · <a href="#search">Search</a> · <a href="#trials">Trials</a></p>
<h2 id="summary">Summary</h2>
{_summary_html(recs, trials)}
{_first_reaching_html(recs, trials, targets)}
{_rejects_html(recs)}
<h2 id="best">Best trial</h2>
{_best_html(study, goal)}
<h2 id="search">Search</h2>
{"".join(_section_html(title, caption, fig) for title, caption, fig in figures)}
<h2 id="trials">Trials</h2>
{_trials_table_html(recs)}
<script>{SORT_SCRIPT}</script>
</body>
</html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _mission(budget: Budget, goal: Goal) -> str:
    aim = ("Goal: the highest validation score." if goal.kind == "accuracy" else
           f"Goal: the fewest parameters whose mean validation score over at least {CONFIRMED} seeds reaches {goal.target:.2%}.")
    return (f"Budget: fewer than {budget.max_params:,} parameters, at most {budget.max_epochs} epochs; mission target "
            f"{TARGET_ACC:.1%} test accuracy. {aim} Trials are chosen on validation only; test accuracy is shown for the record.")


# --- What the figures plot -------------------------------------------------------------------------

def _told(r: TrialRecord) -> float | None:
    """The validation accuracy a trained trial told: its score if complete, else its last finished epoch's."""
    return r.val_score if r.status == "complete" and r.val_score is not None else r.last_val


def _trained(recs: list[TrialRecord]) -> list[TrialRecord]:
    return [r for r in recs if r.trained and _told(r) is not None]


def _targets(goal: Goal) -> list[tuple[float, str]]:
    """The horizontal lines: the mission's test-accuracy target, and a `smallest` goal's val target if different."""
    mission = f"{TARGET_ACC * 100:g} % target (mission, on test accuracy)"
    if goal.kind != "smallest":
        return [(TARGET_ACC, mission)]
    if math.isclose(goal.target, TARGET_ACC):
        return [(TARGET_ACC, f"{mission} = goal (val score)")]
    return [(TARGET_ACC, mission), (goal.target, f"{goal.target * 100:g} % goal: smallest net whose val score reaches it")]


def _hover(r: TrialRecord) -> str:
    """What a point stands for, in a few lines: size, scores with their seeds, why it stopped."""
    size = f"{r.params:,} params" if r.params is not None else "no parameter count"
    lines = [f"trial {r.number} ({r.status})", size]
    if r.status == "complete":
        sd = r.sd_val()
        lines.append(f"mean val {r.mean_val():.2%}" + (f" ± {sd:.2%}" if sd is not None else "") + f" over {max(r.n_seeds, 1)} seed(s)")
        if r.mean_test_last3() is not None:
            lines.append(f"test (last 3 epochs, for the record) {r.mean_test_last3():.2%}")
    elif r.last_val is not None:
        lines.append(f"last val {r.last_val:.2%} after {r.epochs} epoch(s)")
    if r.warm_start:
        lines.append(f"warm start: {r.warm_start}")
    return "<br>".join(escape(line, quote=False) for line in [*lines, r.reason[:90]])


def _acc_axis(values: list[float], targets: list[tuple[float, str]]) -> dict:
    """A y axis that spans the data and the target lines, and never claims more than 100 %."""
    ys = [*values, *(y for y, _ in targets)]
    lo, hi = min(ys), max(ys)
    pad = max(0.001, 0.06 * (hi - lo))
    return {"range": [lo - pad, min(hi + pad, 1.0005)], "tickformat": ".1%" if hi - lo > 0.05 else ".2%",
            "title": {"text": "validation accuracy"}}


def _nice_step(span: float, most: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that cuts `span` into at most `most` pieces."""
    step = 1
    while span / step > most:
        step = step * 5 // 2 if str(step)[0] == "2" else step * 2  # 1 -> 2 -> 5 -> 10 -> 20 -> 50 ...
    return step


def _count_axis(title: str, top: int) -> dict:
    """Trial numbers, epochs and counts are whole: ticks 1, 2, 5, 10, ... apart, never at 0.5."""
    return {"title": {"text": title}, "dtick": _nice_step(top, 12), "tick0": 0}


def _add_targets(fig: go.Figure, targets: list[tuple[float, str]], **where: int) -> None:
    positions = ["top left", "bottom right"]
    for (y, label), position, color in zip(targets, positions, ["green", "purple"]):
        fig.add_hline(y=y, line={"dash": "dot", "color": color}, annotation_text=label, annotation_position=position,
                      annotation_font={"color": color, "size": 12}, annotation_bgcolor="rgba(255,255,255,0.75)", **where)


def _style(fig: go.Figure, height: int, **layout: object) -> go.Figure:
    return fig.update_layout({**FIGURE_STYLE, "height": height, **layout})


# --- The figures (each returns a figure, or a note saying why there is none) ----------------------

Shown = go.Figure | tuple[go.Figure, str] | str  # a figure, a figure and what it rests on, or a note instead
NO_TRAINED = "No trained trial yet: nothing to plot (rejected and failed trials are counted in the summary)."


def _history_figure(recs: list[TrialRecord], targets: list[tuple[float, str]]) -> go.Figure | str:
    """Score per trial in order, with the best so far: is the search still improving?"""
    trained = _trained(recs)
    if not trained:
        return NO_TRAINED
    complete = [r for r in trained if r.status == "complete"]
    best = list(itertools.accumulate((r.val_score for r in complete), max))
    fig = go.Figure()
    for name, status, marker in [("pruned (val at last epoch)", "pruned", {"color": "grey", "opacity": 0.45}),
                                 ("diverged (val at last epoch)", "diverged", {"color": "orange", "symbol": "diamond"}),
                                 ("complete (val score)", "complete", {"color": "royalblue", "size": 9})]:
        group = [r for r in trained if r.status == status]
        fig.add_trace(go.Scatter(x=[r.number for r in group], y=[_told(r) for r in group], mode="markers", name=name, marker=marker,
                                 hovertext=[_hover(r) for r in group], hoverinfo="text"))
    fig.add_trace(go.Scatter(x=[r.number for r in complete], y=best, mode="lines", name="best so far", line={"shape": "hv", "color": "crimson"}))
    _add_targets(fig, targets)
    return _style(fig, 480, xaxis=_count_axis("trial number", max(r.number for r in trained)), yaxis=_acc_axis([_told(r) for r in trained], targets))


def pareto_front(recs: list[TrialRecord]) -> list[TrialRecord]:
    """The completed trials no other completed trial beats on both counts (fewer-or-equal parameters and
    higher-or-equal mean val score, one strictly), by parameter count: the smallest net for each accuracy level."""
    complete = [r for r in recs if r.status == "complete" and r.params is not None and r.mean_val() is not None]
    front: list[TrialRecord] = []
    best = -math.inf
    # Fewest parameters first, best score first among equals: a trial is dominated exactly when an
    # earlier one scored higher, or scored the same with fewer parameters.
    for r in sorted(complete, key=lambda r: (r.params, -r.mean_val())):
        ties_last = bool(front) and (front[-1].params, front[-1].mean_val()) == (r.params, r.mean_val())
        if r.mean_val() > best or ties_last:
            front.append(r)
            best = r.mean_val()
    return front


def _params_figure(recs: list[TrialRecord], budget: Budget, targets: list[tuple[float, str]]) -> go.Figure | str:
    """Accuracy against size: where the budget binds, which nets are the smallest for their accuracy, how sure we are."""
    trained = [r for r in _trained(recs) if r.params is not None]
    if not trained:
        return NO_TRAINED
    over = [r.params for r in recs if r.status == "rejected" and r.params is not None]
    fig = make_subplots(rows=2 if over else 1, cols=1, row_heights=[0.78, 0.22] if over else None, vertical_spacing=0.12)
    stopped = [r for r in trained if r.status != "complete"]
    fig.add_trace(go.Scatter(x=[r.params for r in stopped], y=[_told(r) for r in stopped], mode="markers",
                             name="pruned or diverged (val at last epoch, not a score)", marker={"color": "grey", "opacity": 0.4},
                             hovertext=[_hover(r) for r in stopped], hoverinfo="text"), row=1, col=1)
    complete = [r for r in trained if r.status == "complete"]
    single = [r for r in complete if r.n_seeds < CONFIRMED]
    fig.add_trace(go.Scatter(x=[r.params for r in single], y=[r.mean_val() for r in single], mode="markers", name="complete, 1 seed",
                             marker={"color": "royalblue", "size": 9, "symbol": "circle-open"}, hovertext=[_hover(r) for r in single],
                             hoverinfo="text"), row=1, col=1)
    confirmed = [r for r in complete if r.n_seeds >= CONFIRMED]
    fig.add_trace(go.Scatter(x=[r.params for r in confirmed], y=[r.mean_val() for r in confirmed], mode="markers",
                             name=f"complete, confirmed (≥ {CONFIRMED} seeds: mean ± sd)", marker={"color": "royalblue", "size": 10},
                             error_y={"type": "data", "array": [r.sd_val() or 0.0 for r in confirmed], "visible": True, "thickness": 1.5},
                             hovertext=[_hover(r) for r in confirmed], hoverinfo="text"), row=1, col=1)
    front = pareto_front(recs)
    fig.add_trace(go.Scatter(x=[r.params for r in front], y=[r.mean_val() for r in front], mode="lines", name="Pareto front (mean val score)",
                             line={"color": "crimson", "shape": "hv"}, hoverinfo="skip"), row=1, col=1)
    _add_targets(fig, targets, row=1, col=1)
    fig.add_vline(x=budget.max_params, line={"dash": "dash", "color": "black"}, annotation_text=f"parameter budget ({budget.max_params:,})",
                  annotation_position="top left", row=1, col=1)
    fig.update_yaxes(_acc_axis([_told(r) for r in trained] + [r.mean_val() for r in complete], targets), row=1, col=1)
    # From 0: how small the nets are, next to the budget.
    fig.update_xaxes(title_text="parameters", range=[0, 1.03 * max(budget.max_params, *(r.params for r in trained))], row=1, col=1)
    if over:
        _add_rejects_strip(fig, over, budget)
    return _style(fig, 640 if over else 500)


def _add_rejects_strip(fig: go.Figure, over: list[int], budget: Budget) -> None:
    """Over-budget rejects as counts along their own parameter axis: sizes the sampler tried, never a score."""
    size = _nice_step(max(over) - min(over), 20)
    start = min(over) - min(over) % size
    counts, _ = np.histogram(over, bins=np.arange(start, max(over) + 2 * size, size))
    fig.add_trace(go.Histogram(x=over, xbins={"start": start, "end": max(over) + size, "size": size}, marker={"color": "firebrick"},
                               name=f"rejected over budget: {len(over)}, never trained (count per size)"), row=2, col=1)
    fig.add_vline(x=budget.max_params, line={"dash": "dash", "color": "black"}, row=2, col=1)
    fig.update_xaxes(title_text="parameters of rejected candidates", row=2, col=1)
    fig.update_yaxes(_count_axis("rejected", int(counts.max())), row=2, col=1)


def _curves_figure(recs: list[TrialRecord], targets: list[tuple[float, str]]) -> go.Figure | str:
    """Validation accuracy per epoch of the best trials and of some pruned ones: were the prunings fair?"""
    top = sorted((r for r in recs if r.status == "complete" and r.history), key=lambda r: -r.mean_val())[:TOP_CURVES]
    pruned = [r for r in recs if r.status == "pruned" and r.history]
    # The pruned trials that ran longest: the later, harder pruning decisions are the ones worth checking.
    sample = sorted(pruned, key=lambda r: (-r.epochs, r.number))[:PRUNED_CURVES]
    if not top + sample:
        return NO_TRAINED
    fig = go.Figure()
    for r in top + sample:
        faint = r.status == "pruned"
        fig.add_trace(go.Scatter(x=[h["epoch"] for h in r.history], y=[h["val_acc"] for h in r.history], mode="lines+markers",
                                 name=f"trial {r.number} ({r.status})", opacity=0.5 if faint else 1.0,
                                 line={"dash": "dash" if faint else "solid"}, hovertext=_hover(r), hoverinfo="text+x+y"))
    _add_targets(fig, targets)
    values = [h["val_acc"] for r in top + sample for h in r.history]
    return _style(fig, 520, xaxis=_count_axis("epoch", max(r.epochs for r in top + sample)), yaxis=_acc_axis(values, targets),
                  legend={"orientation": "v", "x": 1.02, "y": 1, "yanchor": "top"}, margin={**FIGURE_STYLE["margin"], "r": 160})


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence optuna's info lines and its "few trials in some regimes" warnings: the caption says how much to trust it."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _told_study(trained: list[TrialRecord], trials: dict[int, FrozenTrial]) -> optuna.Study:
    """The trained trials in a scratch in-memory study whose value is what each told (score, or last val if pruned)."""
    study = optuna.create_study(direction="maximize")
    for r in trained:
        t = trials[r.number]
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=_told(r), params=t.params, distributions=t.distributions))
    return study


def _importances(trained: list[TrialRecord], trials: dict[int, FrozenTrial]) -> tuple[dict[str, float], str] | str:
    """Importances (name -> share) and the words saying what they rest on; or a note saying why there are none."""
    n = len(trained)
    if n < MIN_IMPORTANCE_TRIALS:
        return (f"Hyper-parameter importances: not computed: they need at least {MIN_IMPORTANCE_TRIALS} trained trials "
                f"(completed, pruned or diverged), the study has {n}.")
    quantile = min(0.5, max(0.1, TOP_TRIALS / n))
    top = math.ceil(quantile * n)
    # PED-ANOVA needs numpy only and handles the conditional space (fANOVA, optuna's default, needs scikit-learn).
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    try:
        with _quiet():
            values = optuna.importance.get_param_importances(_told_study(trained, trials), evaluator=evaluator)
    except Exception as e:  # an odd space should cost this figure only, not the page
        return f"Hyper-parameter importances: not available ({e.__class__.__name__}: {e})."
    if not values:
        return "Hyper-parameter importances: the trained trials record no search parameters."
    n_complete = sum(r.status == "complete" for r in trained)
    about = (f"From {n} trained trials ({n_complete} completed at their val score, {n - n_complete} pruned or diverged at the val accuracy "
             f"of their last epoch): how much each parameter separates the top {top} from the rest."
             + (" With this few trials, read it as a rough guide." if n < 50 else ""))
    return values, about


def _importances_figure(values: dict[str, float]) -> go.Figure:
    """One labelled bar per parameter, in words: the height grows with the count so no tick label is skipped."""
    names = list(values)
    labels = [param_label(p) for p in names]
    fig = go.Figure(go.Bar(x=[values[p] for p in names], y=labels, orientation="h", marker={"color": "royalblue"},
                           text=[f"{values[p]:.1%}" for p in names], textposition="outside", cliponaxis=False, hoverinfo="x+y"))
    top = max(values.values(), default=0.0) or 1.0
    return _style(fig, 120 + 26 * len(names), showlegend=False, margin={**FIGURE_STYLE["margin"], "t": 40},
                  xaxis={"title": {"text": "share of importance"}, "tickformat": ".0%", "range": [0, top * 1.15]},
                  yaxis={"autorange": "reversed", "tickmode": "array", "tickvals": labels, "ticktext": labels,
                         "tickfont": {"size": 12}, "automargin": True})


def _axis_params(t: FrozenTrial) -> tuple[dict[str, object], dict[str, BaseDistribution]]:
    """A trial's search parameters, the per-optimizer learning rates merged into one `lr` so it gets one axis."""
    params, dists = dict(t.params), dict(t.distributions)
    for name in [p for p in params if p.endswith("_lr")]:
        params["lr"] = params.pop(name)
        dists.pop(name)
        dists["lr"] = FloatDistribution(min(lo for lo, _ in LR_RANGE.values()), max(hi for _, hi in LR_RANGE.values()), log=True)
    return params, dists


def _wrap(label: str, width: int = 17) -> str:
    """Axis labels side by side: a few short lines each (plotly breaks lines at <br>), so neighbours never overlap."""
    return "<br>".join(textwrap.wrap(label, width, break_long_words=False))


def _dimension(label: str, values: list, dist: BaseDistribution) -> dict:
    """A parcoords axis: categories and small integer sets as ticks at their values, log-scaled floats on a
    log axis labelled with their real values, other floats to 3 significant digits."""
    label = _wrap(label)
    if isinstance(dist, CategoricalDistribution):
        seen = [c for c in dist.choices if c in values]
        text = [("yes" if c else "no") if isinstance(c, bool) else str(c) for c in seen]
        return {"label": label, "values": [seen.index(v) for v in values], "tickvals": list(range(len(seen))), "ticktext": text,
                "range": [-0.3, len(seen) - 0.7]}
    if getattr(dist, "log", False):
        lo, hi = math.log10(min(values)), math.log10(max(values))
        ticks = [lo + (hi - lo) * k / 4 for k in range(5)] if hi > lo else [lo]
        return {"label": label, "values": [math.log10(v) for v in values], "tickvals": ticks, "ticktext": [f"{10 ** v:.2g}" for v in ticks]}
    distinct = sorted(set(values))
    if all(isinstance(v, int) for v in distinct):
        ticks = {"tickvals": distinct, "ticktext": [str(v) for v in distinct]} if len(distinct) <= 8 else {"tickformat": "d"}
        return {"label": label, "values": values, **ticks}
    return {"label": label, "values": values, "tickformat": ".3~g"}


def _rank(p: str, ranking: dict[str, float]) -> float:
    """A parameter's importance; the merged `lr` ranks as its most important per-optimizer rate."""
    if p == "lr":
        return max((v for k, v in ranking.items() if k.endswith("_lr")), default=0.0)
    return ranking.get(p, 0.0)


def _parallel_figure(trained: list[TrialRecord], trials: dict[int, FrozenTrial], ranking: dict[str, float] | None) -> Shown:
    """Pruned trials included; only parameters most trials have and that vary get an axis (no collapsed axes)."""
    if len(trained) < MIN_PARALLEL_TRIALS:
        return f"Parallel coordinates: need at least {MIN_PARALLEL_TRIALS} trained trials, the study has {len(trained)}."
    rows = [(r, *_axis_params(trials[r.number])) for r in trained]
    counts: dict[str, int] = {}
    for _, params, _ in rows:
        for p in params:
            counts[p] = counts.get(p, 0) + 1
    common = [p for p, c in counts.items() if c >= PARALLEL_SHARE * len(rows)]
    order = sorted(common, key=lambda p: (-_rank(p, ranking or {}), PARALLEL_FIRST.index(p) if p in PARALLEL_FIRST else len(PARALLEL_FIRST)))
    chosen: list[str] = []
    for p in order:  # by importance where known; keep a parameter only if it varies among the lines drawn
        drawn = [params for _, params, _ in rows if all(q in params for q in [*chosen, p])]
        if len(chosen) < PARALLEL_AXES and len({repr(params[p]) for params in drawn}) > 1:
            chosen.append(p)
    if not chosen:
        return f"Parallel coordinates: no search parameter is both set in {PARALLEL_SHARE:.0%} of the trained trials and varied among them."
    lines = [(r, params, dists) for r, params, dists in rows if all(p in params for p in chosen)]
    statuses = [s for s in ("complete", "pruned", "diverged") if any(r.status == s for r, _, _ in lines)]
    dims = [_dimension("status", [r.status for r, _, _ in lines], CategoricalDistribution(statuses))]
    dims += [_dimension(param_label(p), [params[p] for _, params, _ in lines], lines[0][2][p]) for p in chosen]
    told = [_told(r) for r, _, _ in lines]
    dims.append({"label": _wrap("validation accuracy (score, or last epoch if pruned)"), "values": told, "tickformat": ".2%"})
    fig = go.Figure(go.Parcoords(dimensions=dims, line={"color": told, "colorscale": "Viridis", "showscale": False},
                                 labelside="bottom", labelfont={"size": 12}, tickfont={"size": 11}, rangefont={"size": 11}))
    dropped = len(rows) - len(lines)
    about = (f"{len(lines)} of {len(rows)} trained trials drawn" + (f" ({dropped} lack one of these parameters)" if dropped else "")
             + "; colour = validation accuracy (yellow best). Drag along an axis to pick out trials.")
    # Labels below the axes: their extra lines grow downwards, away from the axes' top values.
    return _style(fig, 600, margin={"t": 40, "b": 130, "l": 80, "r": 80}), about


# --- HTML pieces -----------------------------------------------------------------------------------

def _section_html(title: str, caption: str, shown: Shown) -> str:
    """A heading, then the figure with what it shows and rests on, or the note saying why there is none."""
    if isinstance(shown, str):
        return f"<h3>{escape(title)}</h3>\n{_note(shown)}"
    fig, about = shown if isinstance(shown, tuple) else (shown, "")
    html = fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})
    about_html = f'<p class="caption">{escape(about)}</p>\n' if about else ""
    return f'<h3>{escape(title)}</h3>\n<p class="caption">{escape(caption)}</p>\n{about_html}{html}\n'


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>\n'


def _pct(x: float | None, sd: float | None = None) -> str:
    if x is None:
        return "-"
    return f"{x:.2%}" + (f" ± {sd:.2%}" if sd is not None else "")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _compute_time(recs: list[TrialRecord]) -> str:
    """Summed recorded seconds; trials that never recorded any (rejected, crashed, running) are not counted as 0 s."""
    recorded = [r.seconds for r in recs if r.seconds is not None]
    if not recs:
        return "-"
    if not recorded:
        return "not recorded"
    partial = f" ({len(recorded)} of {len(recs)} recorded)" if len(recorded) < len(recs) else ""
    return _duration(sum(recorded)) + partial


def _summary_html(recs: list[TrialRecord], trials: dict[int, FrozenTrial]) -> str:
    """Trials and compute time by status, and the wall time from the first start to the last finish."""
    by_status: dict[str, list[TrialRecord]] = {s: [] for s in STATUSES}
    for r in recs:
        by_status.setdefault(r.status, []).append(r)
    rows = "".join(f'<tr><td>{escape(s)}</td><td>{len(rs)}</td><td class="num">{_compute_time(rs)}</td><td>{escape(STATUS_MEANING.get(s, ""))}</td></tr>\n'
                   for s, rs in by_status.items())
    rows += f'<tr><th>total</th><th>{len(recs)}</th><th class="num">{_compute_time(recs)}</th><th></th></tr>\n'
    start = _first_start(trials)
    ends = [t.datetime_complete for t in trials.values() if t.datetime_complete]
    wall = f"Wall time: {_duration((max(ends) - start).total_seconds())}." if start and ends else "Wall time: no finished trial yet."
    return (f"<table>\n<tr><th>status</th><th>trials</th><th>compute time</th><th>meaning</th></tr>\n{rows}</table>\n"
            f"<p>{wall} Compute time sums the seconds each trial recorded; trials that recorded none show “not recorded”, not 0 s.</p>\n")


def _first_start(trials: dict[int, FrozenTrial]) -> datetime.datetime | None:
    """When the study began: its first trial's start (what wall times and times to target count from)."""
    return min((t.datetime_start for t in trials.values() if t.datetime_start), default=None)


def _first_reaching_html(recs: list[TrialRecord], trials: dict[int, FrozenTrial], targets: list[tuple[float, str]]) -> str:
    """How long the search took to find a candidate whose val score reaches each target: the figure that says
    whether a search beats tuning by hand. Counted from the study's first trial start (pauses included)."""
    start = _first_start(trials)
    lines = []
    for target, _ in targets:
        hits = [(trials[r.number].datetime_complete, r.number) for r in recs
                if r.status == "complete" and r.val_score is not None and r.val_score >= target and trials[r.number].datetime_complete]
        if start is None or not hits:
            lines.append(f"No trial has reached a val score of {target:.2%} yet.")
            continue
        done, number = min(hits)
        lines.append(f"First val score &ge; {target:.2%}: trial #{number}, {_duration((done - start).total_seconds())} "
                     "after the study's first trial started (one seed; any pause between runs included).")
    return "<p>" + "<br>".join(lines) + "</p>\n"


def _reject_kind(r: TrialRecord) -> str:
    """Over budget (the parameter count is known) or a spec that cannot be built (counted before any size)."""
    if r.params is not None:
        return "over budget"
    if "does not fit" in r.reason:
        size = r.candidate.spec.image_size if r.candidate else 28
        return f"does not fit {size}x{size}"
    return "invalid spec"


def _rejects_html(recs: list[TrialRecord]) -> str:
    """Why candidates were rejected before training (zero cost): how many, of what size, one example reason each."""
    rejected = [r for r in recs if r.status == "rejected"]
    if not rejected:
        return "<p>Rejected before training: none.</p>\n"
    groups: dict[str, list[TrialRecord]] = {}
    for r in rejected:
        groups.setdefault(_reject_kind(r), []).append(r)
    rows = ""
    for kind, rs in groups.items():
        sizes = [r.params for r in rs if r.params is not None]
        span = "-" if not sizes else f"{min(sizes):,}" if min(sizes) == max(sizes) else f"{min(sizes):,} – {max(sizes):,}"
        rows += f'<tr><td>{escape(kind)}</td><td class="num">{len(rs)}</td><td class="num">{span}</td><td>{escape(rs[0].reason)}</td></tr>\n'
    return (f"<h3>Rejected before training ({len(rejected)})</h3>\n<table>\n<tr><th>why</th><th>trials</th><th>parameters</th>"
            f"<th>example reason</th></tr>\n{rows}</table>\n")


def _best_html(study: optuna.Study, goal: Goal) -> str:
    """The trial `nas20k best` would export (highest mean val score); for a `smallest` goal also the smallest that passes."""
    try:
        best = best_record(study)
    except ExportError as e:
        return _note(str(e))
    html = _candidate_html(study, best)
    if goal.kind == "smallest":
        html = "<h3>Highest mean validation score (what `nas20k best` exports)</h3>\n" + html
        try:
            small = smallest_record(study, goal.target)
            html += f"<h3>Smallest net reaching the goal (mean val score ≥ {goal.target:.2%}, ≥ {CONFIRMED} seeds)</h3>\n" + _candidate_html(study, small)
        except ExportError as e:
            html += f"<h3>Smallest net reaching the goal</h3>\n{_note(str(e))}"
    return html


def _rows(facts: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{escape(name)}</th><td>{escape(value)}</td></tr>\n" for name, value in facts)


def _candidate_html(study: optuna.Study, r: TrialRecord) -> str:
    """Scores, the seeds behind them, the architecture and its training recipe side by side, and the mission's list."""
    spec, cfg = r.candidate.spec, r.candidate.train
    facts = [
        ("trial", str(r.number)),
        ("parameters", f"{r.params:,}" if r.params is not None else "-"),
        ("MACs per image", f"{r.macs:,}" if r.macs is not None else "-"),
        ("epochs", str(r.epochs)),
        ("mean validation score", f"{_pct(r.mean_val(), r.sd_val())} over {max(r.n_seeds, 1)} seed(s)"),
        ("test accuracy, last 3 epochs (for the record)", f"{_pct(r.mean_test_last3(), r.sd_test_last3())}"),
        ("test accuracy, final weights (this seed)", _pct(r.test_acc)),
        ("compute time", _duration(r.seconds) if r.seconds is not None else "not recorded"),
    ]
    seeds = "".join(f'<tr><td class="num">{s.seed}</td><td class="num">{_pct(s.val_score)}</td><td class="num">{_pct(s.test_acc_last3)}</td>'
                    f'<td>{s.source}</td></tr>\n' for s in r.seeds)
    seeds_table = (f"<table>\n<tr><th>seed</th><th>val score</th><th>test, last 3 epochs</th><th>run</th></tr>\n{seeds}</table>\n"
                   if r.seeds else "")
    checks = "".join(f'<li class="{"ok" if ok else "fail"}">{"✓" if ok else "✗"} {escape(line)}</li>\n'
                     for line, ok in record_checklist(study, r))
    return (f'<div class="pair">\n<div><h4>Scores</h4>\n<table>\n{_rows(facts)}</table>\n</div>\n'
            f'<div><h4>Seeds and requirements</h4>\n{seeds_table}<ul>\n{checks}</ul>\n</div>\n</div>\n'
            f'<div class="pair">\n<div><h4>Architecture</h4>\n<table>\n{_rows(_spec_facts(spec))}</table>\n</div>\n'
            f'<div><h4>Training recipe</h4>\n<table>\n{_rows(_recipe_facts(cfg))}</table>\n</div>\n</div>\n')


def _spec_facts(spec: ArchSpec) -> list[tuple[str, str]]:
    transitions = ", ".join(f"1x1 to {w} + max-pool" if w else "max-pool" for w in spec.transitions) or "none"
    return [
        ("3x3 conv widths, by block", _arch(spec.blocks)),
        ("padding, by block", " | ".join(map(str, spec.padding))),
        ("transitions", transitions),
        ("head", spec.head),
        ("dropout", f"p={spec.dropout:.3g} after 3x3 conv(s) {', '.join(map(str, spec.dropout_after)) or 'none'} (counted from 0)"),
        ("3x3 conv bias", "yes" if spec.bias else "no"),
        ("1x1 convs: bias-free + BatchNorm", "yes" if spec.squeeze_bn else "no"),
    ]


def _recipe_facts(cfg: TrainConfig) -> list[tuple[str, str]]:
    """Every TrainConfig field in words; the ones this recipe does not use say so."""
    unused = set()
    if cfg.optimizer != "sgd":
        unused |= {"momentum", "nesterov"}
    if cfg.schedule != "step":
        unused.add("drop_at")
    facts = []
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        text = ("yes" if value else "no") if isinstance(value, bool) else f"{value:.4g}" if isinstance(value, float) else str(value)
        facts.append((RECIPE_LABELS.get(f.name, f.name.replace("_", " ")), text + (" (not used)" if f.name in unused else "")))
    return facts


TABLE_COLUMNS = ["trial", "status", "parameters", "epochs", "val score", "last val", "seeds", "mean val ± sd", "test acc (final)",
                 "test acc, last 3 (mean over seeds)", "compute", "reason", "architecture: widths / transitions / head", "recipe"]


def _cell(text: str, sort: object = None, num: bool = False, wrap: bool = False) -> str:
    """A table cell; `sort` (data-v) is what the header click sorts on, so 99.1 % sorts as a number."""
    key = "" if sort is None else f' data-v="{escape(str(sort))}"'
    cls = ' class="num"' if num else ' class="wrap"' if wrap else ""
    return f"<td{key}{cls}>{escape(text)}</td>"


def _trial_row(r: TrialRecord) -> str:
    spec, cfg = (r.candidate.spec, r.candidate.train) if r.candidate else (None, None)
    arch = f"{_arch(spec.blocks)} / {'-'.join(map(str, spec.transitions))} / {spec.head}" if spec else ""
    recipe = f"{cfg.optimizer} {cfg.lr:.3g}, {cfg.schedule}, batch {cfg.batch_size}" if cfg else ""
    reason = r.reason + (f" (warm start: {r.warm_start})" if r.warm_start else "") + (f" (retries {r.retry_of})" if r.retry_of is not None else "")
    mean = r.mean_val() if r.status == "complete" else None
    cells = [
        _cell(str(r.number), r.number, True),
        _cell(r.status),
        _cell(f"{r.params:,}" if r.params is not None else "", r.params, True),
        _cell(str(r.epochs) if r.epochs else "", r.epochs or None, True),
        _cell(_pct(r.val_score) if r.val_score is not None else "", r.val_score, True),
        _cell(_pct(r.last_val) if r.last_val is not None else "", r.last_val, True),
        _cell(str(r.n_seeds) if r.n_seeds else "", r.n_seeds or None, True),
        _cell(_pct(mean, r.sd_val()) if mean is not None else "", mean, True),
        _cell(_pct(r.test_acc) if r.test_acc is not None else "", r.test_acc, True),
        _cell(_pct(r.mean_test_last3()) if r.mean_test_last3() is not None else "", r.mean_test_last3(), True),
        _cell(_duration(r.seconds) if r.seconds is not None else "-", r.seconds, True),
        _cell(reason, wrap=True),
        _cell(arch),
        _cell(recipe),
    ]
    return f"<tr>{''.join(cells)}</tr>\n"


def _trials_table_html(recs: list[TrialRecord]) -> str:
    """Every trial, sortable by a click on a header (inline script, no external assets)."""
    if not recs:
        return _note("No trial yet.")
    head = "".join(f"<th>{escape(c)}</th>" for c in TABLE_COLUMNS)
    body = "".join(_trial_row(r) for r in recs)
    return (f'<p class="caption">Click a header to sort. Test accuracy is for the record: nothing is chosen on it. '
            f'“-” in compute: not recorded.</p>\n<div class="scroll"><table class="sortable" id="trials-table">\n'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table></div>\n")
