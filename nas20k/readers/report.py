"""The study as one offline HTML page: optuna.visualization figures, pandas tables. Optuna plots `trial.value`
(scalarized for a `smallest` goal, missing when pruned), so its figures draw a scratch study valued at what each
trial told. Accuracy axes zoom to the trained candidates; the mission's 99.4 % is on test, never on a val axis."""

from __future__ import annotations

import itertools
import math
import warnings
from html import escape
from pathlib import Path

import optuna
import optuna.visualization as vis
import pandas as pd
import plotly.graph_objects as go
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs

from nas20k.base.errors import UserError
from nas20k.base.mission import TARGET_ACC
from nas20k.core.recipe import labels
from nas20k.core.space import LR_RANGE
from nas20k.readers.record import TRAINED, StudyMeta, TrialRecord, search_records
from nas20k.readers.results import CONFIRMED, best_record, pareto_front, record_checklist, smallest_record, trials_frame
from nas20k.readers.tables import pct

MIN_IMPORTANCE_TRIALS = 10  # fewer trained trials say more about luck than about parameters
TOP_TRIALS = 5  # importance is that of reaching the top max(10 %, 5 trials)
PARALLEL_AXES = 7  # parameter axes besides status and accuracy: more do not fit side by side
TOP_CURVES, PRUNED_CURVES = 5, 10
PCT = ("val_score", "mean_val", "sd_val", "test_acc", "test_last3", "last_val")  # table columns shown as 99.40%
VAL = "val accuracy (score; pruned: last epoch)"
Shown = go.Figure | str  # a figure, or a note saying why there is none
NO_TRAINED = "No trained trial yet: nothing to plot (rejected and failed trials are counted in the summary)."
TITLES = ("Optimization history", "Accuracy vs parameters", "Learning curves", "Hyper-parameter importances",
          "Parallel coordinates")
STYLE = """body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; } .note { color: #555; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; } th { background: #eee; position: sticky;
top: 0; } td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; } .pair {
display: grid; grid-template-columns: 1fr 1fr; gap: 0 2em; } .scroll { max-height: 640px; overflow: auto; }
#trials-table { font-size: 0.8em; } #trials-table td:nth-child(3) { min-width: 22em; }"""


def write_report(study: optuna.Study, path: Path) -> Path:
    """One self-contained page (plotly.js inlined: it opens offline)."""
    recs, meta, name = search_records(study), StudyMeta.of(study), study.study_name
    table = trials_frame(recs).set_index(["trial", "status", "reason"])  # the reason third, where it is never cut off
    shown = "".join(f"<h3>{t}</h3>\n" + (_note(f) if isinstance(f, str) else f.to_html(
        full_html=False, include_plotlyjs=False, config={"displaylogo": False})) for t, f in figures(study).items())
    picks = {"Highest mean val score (what `best` exports)": winner(recs, meta, name, "accuracy")}
    if meta.goal.kind == "smallest":
        picks[f"Smallest reaching {meta.goal.target:.2%} over ≥ {CONFIRMED} seeds"] = winner(recs, meta, name)
    best = "".join(f"<h3>{escape(title)}</h3>" + (_note(r) if isinstance(r, str) else _pair(candidate_frames(r, meta)))
                   for title, r in picks.items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>nas20k report: {escape(name)}</title>
<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>
<h1>nas20k report: study {escape(name)}</h1>
<p>Budget: fewer than {meta.budget.max_params:,} parameters, at most {meta.budget.max_epochs} epochs. Mission:
{TARGET_ACC:.1%} test accuracy. Goal: {meta.goal.kind}{f" net whose mean val score over ≥ {CONFIRMED} seeds reaches "
f"{meta.goal.target:.2%}" if meta.goal.kind == "smallest" else " (highest val score)"}. Chosen on validation only.</p>
<h2 id="summary">Summary</h2>\n{_pair(summary(study, recs, meta))}
<h2 id="best">Best trial</h2>\n{best}
<h2 id="search">Search</h2>\n{shown}
<h2 id="trials">Trials</h2>\n<div class="scroll">{_html(table, table_id="trials-table")}</div>
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def told(r: TrialRecord) -> float | None:
    """What a trained trial told: its score if complete, else its last *evaluated* epoch (None epochs skipped)."""
    last = list(_curve(r).values())[-1:] if r.trained else []
    return r.val_score if r.status == "complete" and r.val_score is not None else (last or [None])[0]


def _curve(r: TrialRecord) -> dict[int, float]:  # the evaluated epochs' val accuracy
    return {h["epoch"]: h["val_acc"] for h in r.history if h.get("val_acc") is not None}


def _told_study(recs: list[TrialRecord], trials: dict[int, FrozenTrial], status: bool = False) -> optuna.Study:
    """Trials valued at what each told (untrained: FAIL, so numbers match); one `lr` for every optimizer's rate."""
    study = optuna.create_study(direction="maximize")
    lr = FloatDistribution(min(lo for lo, _ in LR_RANGE.values()), max(hi for _, hi in LR_RANGE.values()), log=True)
    for r, value in ((r, told(r)) for r in recs):
        params, dists = dict(trials[r.number].params), dict(trials[r.number].distributions)
        for name in [p for p in params if p.endswith("_lr")]:
            params["lr"], dists["lr"], _ = params.pop(name), lr, dists.pop(name)
        if status and value is not None:  # the parallel plot's first axis
            params["status"], dists["status"] = r.status, CategoricalDistribution(TRAINED)
        study.add_trial(create_trial(state=TrialState.FAIL if value is None else TrialState.COMPLETE, value=value,
                                     params=params, distributions=dists, intermediate_values=_curve(r)))
    return study


def zoom(core: list[float], every: list[float], target: float | None) -> list[float]:
    """The trained candidates' range plus a pad: a few pruned runs at 30 % must not flatten the scores that matter."""
    core = [*(core or every), *([target] if target else [])]
    lo, hi = min(core), max(core + every)
    pad = max(0.001, 0.08 * (hi - lo))
    return [lo - pad, min(hi + pad, 1.0005)]


def _clipped(xs: list, recs: list[TrialRecord], lo: float) -> go.Scatter:
    """The outliers below the axis, as triangles on its bottom edge (the hover gives the real value)."""
    low = [(x, r) for x, r in zip(xs, recs, strict=True) if told(r) < lo]
    return go.Scatter(x=[x for x, _ in low], y=[lo] * len(low), mode="markers", name="below the axis (hover: value)",
                      marker={"symbol": "triangle-down", "color": "grey", "size": 9}, cliponaxis=False,
                      hovertext=[_hover(r) for _, r in low], hoverinfo="text")


def _hover(r: TrialRecord) -> str:
    value = pct(told(r)) if r.status != "complete" else f"{pct(r.mean_val(), r.sd_val())}, {r.n_seeds or 1} seed(s)"
    return f"trial {r.number} ({r.status}), {r.params or 0:,} params: {value}<br>{escape(r.reason[:90])}"


def _winner_trace(x: float, y: float, r: TrialRecord) -> go.Scatter:
    return go.Scatter(x=[x], y=[y], mode="markers+text", name=f"winner: trial {r.number}", textposition="top left",
                      text=[f"winner #{r.number}: {pct(r.mean_val(), r.sd_val())}, {max(r.n_seeds, 1)} seed(s)"],
                      marker={"symbol": "star", "size": 18, "color": "gold", "line": {"width": 1.5, "color": "black"}},
                      cliponaxis=False)


def winner(recs: list[TrialRecord], meta: StudyMeta, name: str, kind: str = "") -> TrialRecord | str:
    """The goal's pick (the smallest confirmed pass, or the best mean val score `best` exports), or why none."""
    try:
        if (kind or meta.goal.kind) == "smallest":
            return smallest_record(recs, meta, name, meta.goal.target)
        return best_record(recs, meta, name)
    except UserError as e:  # results.ExportError: nothing to pick yet
        return str(e)


def figures(study: optuna.Study) -> dict[str, Shown]:
    """Each figure, or a note saying why there is none."""
    recs, meta = search_records(study), StudyMeta.of(study)
    trained, trials = [r for r in recs if told(r) is not None], {t.number: t for t in study.trials}
    if not trained:
        return dict.fromkeys(TITLES, NO_TRAINED)
    target = meta.goal.target if meta.goal.kind == "smallest" else None  # a val target: the one for val axes
    done = [r for r in trained if r.status == "complete"]
    core = [r.val_score for r in done] + [r.mean_val() + k * r.sd_val() for r in done if r.sd_val() for k in (-1, 1)]
    y, best = zoom(core, [told(r) for r in trained], target), winner(recs, meta, study.study_name)
    with warnings.catch_warnings(action="ignore"):  # "few trials in a regime": each figure says what it rests on
        importances = _importances(trained, trials)
        shown = {"Optimization history": _history(recs, trained, trials, y, best),
                 "Accuracy vs parameters": _frontier(recs, trained, y, meta.budget.max_params, best),
                 "Learning curves": _curves(trained, trials, target), "Hyper-parameter importances": importances,
                 "Parallel coordinates": _parallel(recs, trials, importances, y[0])}
    for name in ("Optimization history", "Accuracy vs parameters", "Learning curves") if target else ():
        shown[name].add_hline(y=target, line_dash="dot", line_color="green", annotation_text=f"val target {target:.2%}",
                              annotation_position="bottom left")
    return shown


def _history(recs: list[TrialRecord], trained: list[TrialRecord], trials: dict[int, FrozenTrial], y: list[float],
             best: TrialRecord | str) -> go.Figure:
    """Optuna's history against wall clock (time to a good net is the point); the best line counts scores only."""
    fig = vis.plot_optimization_history(_told_study(recs, trials), target_name=VAL)
    t0 = min(t.datetime_start for t in trials.values() if t.datetime_start)
    at = {n: ((t.datetime_complete or t.datetime_start or t0) - t0).total_seconds() / 60 for n, t in trials.items()}
    line = sorted((r for r in trained if r.status == "complete"), key=lambda r: at[r.number])
    fig.data = fig.data[:2]  # the told values and the best line (optuna's third, of infeasible trials, is empty)
    fig.data[0].update(x=[at[n] for n in fig.data[0].x], hovertext=[_hover(r) for r in trained], marker_color=[
        {"complete": "royalblue", "pruned": "grey"}.get(r.status, "orange") for r in trained])
    fig.data[1].update(x=[at[r.number] for r in line], y=list(itertools.accumulate((r.val_score for r in line), max)),
                       name="best complete score so far", line={"shape": "hv", "color": "crimson"})
    fig.add_trace(_clipped([at[r.number] for r in trained], trained, y[0]))
    if isinstance(best, TrialRecord):  # at its own score: the history plots one seed per trial
        fig.add_trace(_winner_trace(at[best.number], best.val_score, best))
    return fig.update_layout(title="Is the search still improving, and how long did a good net take to find?",
                             height=480, yaxis={"range": y, "tickformat": ".2%"},
                             xaxis_title="minutes since the first trial started")


def _frontier(recs: list[TrialRecord], trained: list[TrialRecord], y: list[float], budget: int,
              best: TrialRecord | str) -> go.Figure:
    """Size against mean val score: confirmed means with sd bars, single seeds open, stopped runs grey."""
    sized = [r for r in trained if r.params is not None]
    stopped, done = [r for r in sized if r.status != "complete"], [r for r in sized if r.status == "complete"]
    fig = go.Figure([go.Scatter(x=[r.params for r in stopped], y=[told(r) for r in stopped], marker_color="darkgrey",
                                name="pruned or diverged (last val)", hovertext=[_hover(r) for r in stopped]),
                     go.Scatter(x=[r.params for r in done], y=[r.mean_val() for r in done], marker_color="royalblue",
                                name="complete: mean ± sd (open: unconfirmed)", hovertext=[_hover(r) for r in done],
                                marker_symbol=["circle" if r.n_seeds >= CONFIRMED else "circle-open" for r in done],
                                error_y={"array": [r.sd_val() for r in done], "width": 0}, marker_size=10)])
    fig.update_traces(mode="markers", hoverinfo="text")
    fig.add_scatter(x=[r.params for r in pareto_front(recs)], y=[r.mean_val() for r in pareto_front(recs)],
                    mode="lines", name="Pareto front", line={"shape": "hv", "color": "crimson"})
    fig.add_trace(_clipped([r.params for r in sized], sized, y[0]))
    if isinstance(best, TrialRecord):
        fig.add_trace(_winner_trace(best.params, best.mean_val(), best))
    if over := [r.params for r in recs if r.status == "rejected" and r.params is not None]:  # never trained: counts
        fig.add_histogram(x=over, yaxis="y2", marker_color="red", opacity=0.3, name=f"rejected by size {len(over)}")
    fig.add_vline(x=budget, line_dash="dash", annotation_text=f"budget {budget:,}")
    return fig.update_layout(title="Frontier: mean val score over seeds against size", height=520, xaxis_title="params",
                             yaxis={"range": y, "tickformat": ".2%", "title": "mean val score"},
                             yaxis2={"overlaying": "y", "side": "right", "title": "rejected", "showgrid": False},
                             xaxis_range=[0, 1.03 * max([budget, *(r.params for r in sized), *over])])


def _curves(trained: list[TrialRecord], trials: dict[int, FrozenTrial], target: float | None) -> go.Figure:
    """Optuna's intermediate values of the chosen trials, each its own colour; pruned ones dashed."""
    top = sorted((r for r in trained if r.status == "complete" and _curve(r)), key=lambda r: -r.mean_val())[:TOP_CURVES]
    chosen = top + sorted((r for r in trained if r.status == "pruned" and _curve(r)),
                          key=lambda r: (-r.epochs, r.number))[:PRUNED_CURVES]  # the later, harder prunings
    fig = vis.plot_intermediate_values(_told_study(chosen, trials))
    for trace, r, color in zip(fig.data, chosen, itertools.cycle(qualitative.Dark24), strict=False):
        trace.update(name=f"trial {r.number} ({r.status})", marker_color=color, line_color=color,
                     line_dash="dash" if r.status == "pruned" else "solid")
    values = [v for r in top or chosen for v in _curve(r).values()] or [told(r) for r in trained]  # complete curves
    return fig.update_layout(title=f"The {TOP_CURVES} best complete, {PRUNED_CURVES} longest pruned trials (dashed): "
                             "were the prunings fair?", height=520, showlegend=True, xaxis_title="epoch",
                             yaxis={"title": "val accuracy", "tickformat": ".2%", "range": zoom(values, [], target)})


def _importances(trained: list[TrialRecord], trials: dict[int, FrozenTrial]) -> Shown:
    """PED-ANOVA on the told values: pruned trials count too, so early stops inform the ranking."""
    n = len(trained)
    if n < MIN_IMPORTANCE_TRIALS:
        return f"Not computed: importances need at least {MIN_IMPORTANCE_TRIALS} trained trials, the study has {n}."
    quantile = min(0.5, max(0.1, TOP_TRIALS / n))
    fig = vis.plot_param_importances(_told_study(trained, trials), target_name=VAL,
                                     evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile))
    title = (f"PED-ANOVA: what separates the top {math.ceil(quantile * n)} of {n} trained trials (pruned ones at "
             "their last val) from the rest. optuna-dashboard also uses PED-ANOVA, on complete trials only, top 10 %.")
    return fig.update_layout(title={"text": title, "font": {"size": 13}}, height=140 + 24 * len(fig.data[0].y))


def _parallel(recs: list[TrialRecord], trials: dict[int, FrozenTrial], imp: Shown, lo: float) -> Shown:
    """Status and the top varying parameters; values are clipped to the zoomed range, as the axis title says."""
    study = _told_study(recs, trials, status=True)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    ranked = list(imp.data[0].y[::-1]) if isinstance(imp, go.Figure) else []  # most important first
    names = ranked or sorted({p for t in done for p in t.params} - {"status"})
    varied = [p for p in names if len({repr(t.params.get(p)) for t in done}) > 1]
    if len(done) < 2 or not varied:
        return "Not drawn: fewer than two trained trials, or no search parameter varies among them."
    fig = vis.plot_parallel_coordinate(study, params=["status", *varied[:PARALLEL_AXES]],
                                       target=lambda t: max(t.value, lo), target_name=f"val acc (≥ {lo:.2%})")
    return fig.update_layout(title="One line per trained trial (pruned ones at their last val)", height=560)


def _html(frame: pd.DataFrame, **kw: object) -> str:
    """Accuracies as 99.40%, missing values blank (never NaN or <NA>); a named index becomes the first columns."""
    frame = frame.reset_index() if any(frame.index.names) else frame
    shown = frame.astype(object).where(frame.notna(), "")
    for c in set(PCT) & set(frame.columns):
        shown[c] = [v if v == "" else f"{v:.2%}" for v in shown[c]]
    return shown.to_html(index=False, border=0, **kw)


def _note(text: str) -> str:
    return f"<p class='note'>{escape(text)}</p>\n"


def _pair(parts: dict[str, pd.DataFrame | str]) -> str:  # tables or notes, two to a row
    return "<div class='pair'>" + "".join(f"<div><h4>{escape(k)}</h4>{_note(v) if isinstance(v, str) else _html(v)}"
                                          "</div>" for k, v in parts.items()) + "</div>"


def _why(r: TrialRecord) -> str:
    """A rejected trial's kind of reason, for the rejects table."""
    if r.params is None:
        return "does not fit" if "does not fit" in r.reason else "invalid spec"
    return "under the floor" if r.reason.startswith("under the floor") else "over budget"


def summary(study: optuna.Study, recs: list[TrialRecord], meta: StudyMeta) -> dict[str, pd.DataFrame | str]:
    """Compute by status (none recorded: blank, never 0), how it ran, when the target was first hit, the rejects."""
    runs = pd.DataFrame({"status": [r.status for r in recs], "seconds": [r.seconds for r in recs]}, dtype=object)
    by_status = runs.groupby("status", sort=False)["seconds"].agg(
        trials="size", recorded="count", minutes=lambda s: round(s.sum() / 60, 1) if s.notna().any() else None)
    rejects = pd.DataFrame([(_why(r), r.params, r.reason) for r in recs if r.status == "rejected"],
                           columns=["why", "params", "reason"]).astype({"params": "Int64"})
    trials, target = study.trials, meta.goal.target
    start = min((t.datetime_start for t in trials if t.datetime_start), default=None)
    hits = sorted((trials[r.number].datetime_complete, r.number) for r in recs
                  if r.status == "complete" and (r.val_score or 0) >= target and trials[r.number].datetime_complete)
    first = pd.DataFrame([{"trial": n, "minutes after the first start": round((done - start).total_seconds() / 60, 1)}
                          for done, n in hits[:1]])
    return {"Trials by status": by_status, f"First val score ≥ {target:.2%}": first if hits else "Not reached yet.",
            "How it ran": pd.DataFrame(meta.runtime) if meta.runtime else "Not recorded (predates runtime records).",
            f"Rejected before training ({len(rejects)})": rejects.groupby("why").agg(
                trials=("reason", "size"), smallest=("params", "min"), largest=("params", "max"),
                example=("reason", "first"))}


def candidate_frames(r: TrialRecord, meta: StudyMeta) -> dict[str, pd.DataFrame]:
    """A candidate's scores and architecture, recipe in words, seeds, and checklist (✓ / ✗ / ? unconfirmed)."""
    facts = {"trial": r.number, "parameters": f"{r.params:,}", "MACs per image": f"{r.macs:,}" if r.macs else "-",
             "epochs": r.epochs, "mean val score": f"{pct(r.mean_val(), r.sd_val())}, {max(r.n_seeds, 1)} seed(s)",
             "test, last 3 epochs (for the record)": pct(r.mean_test_last3(), r.sd_test_last3()),
             "test, final weights (this seed)": pct(r.test_acc), **r.candidate.spec.to_dict()}
    words, marks = labels(), {True: "✓", False: "✗", None: "?"}
    return {"Scores and architecture": pd.DataFrame([(k, str(v)) for k, v in facts.items()], columns=["", "value"]),
            "Training recipe": pd.DataFrame([(words[k], v) for k, v in r.candidate.train.to_dict().items()],
                                            columns=["", "value"]),
            "Seeds": pd.DataFrame([(s.seed, s.val_score, s.test_acc_last3, s.source) for s in r.seeds],
                                  columns=["seed", "val_score", "test_last3", "run"]),
            "Checklist": pd.DataFrame([(marks[ok], line) for line, ok in record_checklist(r, meta)],
                                      columns=["", "requirement"])}
