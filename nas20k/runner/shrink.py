"""The smallest goal's shrink search: from each design whose confirmed seeds pass the val target, scale the widths
down (`factory.copies`) a step at a time, racing seeds on each step, until a size fails; the smallest passing step
is the result. What the hand benchmarks did (a passing design scaled down until it fails), done by the tool.

A step is a search-study trial (recorded `shrink_of` its parent, and as the move "shrink to N %"), trained to its
last epoch unpruned and not counted against --trials; its further seeds are confirm-study runs, as a confirmed
candidate's are, so `best --smallest`, the report and the export read a step like any confirmed trial.

The race on a step (`verdict`): it fails once its mean val over the seeds so far plus Z standard errors is under
the target, and passes once it has `seeds` seeds at a mean >= the target. Why: a step clearly under the target
needs no more seeds, and a pass is the same n-seed mean that a confirmed winner is held to. A failed width step is
repaired (`repair`): each of its same-size neighbours (another recipe, padding) is screened on one run, then the
REPAIRS best are raced the same way, since in `sbs-c2-3k5s20` the step to 2,966 params missed the target by 0.011
points. A lineage stops at its first failing size (a narrower copy of a failing net only loses accuracy); the next
lineage (a larger passing design) starts under the smallest pass so far, so it spends runs only on steps that could
win. With no pass at all, the closest fail of the race is repaired the same way, and a repair that passes starts
the walk.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from nas20k.base.optuna_private import requeue_behind
from nas20k.core.factory import ArchSpec, copies
from nas20k.core.moves import same_size
from nas20k.core.space import WIDTHS, Candidate, expressible, params_of
from nas20k.readers.record import CONFIRM_SUFFIX, StudyMeta, TrialRecord, records, search_records
from nas20k.runner.confirm import SIGMA_PRIOR, Z, pooled_sd, seed_objective
from nas20k.runner.lost import recover_lost_trials
from nas20k.runner.objective import Objective
from nas20k.runner.signals import raise_if_stopped
from nas20k.runner.storage import planning_lock
from nas20k.runner.study import WAIT_POLL, give_back
from nas20k.runner.workers import Worker

RATIO = 0.85  # a step scales its parent to the copy nearest this share of the parent's parameters
REPAIRS = 2  # a failed width step's best-screened same-size neighbours raced before its lineage ends
IN_FLIGHT = ("running", "waiting")
ENDED = ("complete", "pruned", "diverged")  # a step's first run that counts (failed or interrupted ones are redone)


def verdict(vals: list[float], target: float, seeds: int, sigma: float = SIGMA_PRIOR) -> str | None:
    """"pass", "fail", or None while the race on these seed runs' val scores is still open."""
    if not vals:
        return None
    mean = statistics.fmean(vals)
    if len(vals) >= seeds:
        return "pass" if mean >= target else "fail"
    return "fail" if mean + Z * sigma / math.sqrt(len(vals)) < target else None


@dataclass(frozen=True)
class Action:
    """What to train next: a new step (`candidate`, recorded as `move`, under trial `of`), seed `seed` of step
    `of`, or step `of` itself, queued again."""

    kind: str  # "step" | "seed" | "run"
    of: int
    candidate: Candidate | None = None
    move: str | None = None
    move_of: int | None = None  # the trial the step moves from: `of` for a width step, the failed step for a repair
    seed: int | None = None


WAIT = Action("wait", -1)  # a step's runs are in flight and none is left to start: look again soon


def verdicts(recs: list[TrialRecord], target: float, seeds: int) -> dict[int, str | None]:
    """The race's verdict on every trial whose first run ended: a diverged (or pruned) one has failed; one run's
    sd is pooled over the completed trials' seeds."""
    sigma = pooled_sd([r for r in recs if r.status == "complete"])
    return {r.number: verdict([s.val_score for s in r.seeds], target, seeds, sigma) if r.status == "complete"
            else "fail" for r in recs if r.status in ENDED}


def plan(recs: list[TrialRecord], taken: dict[int, set[int]], target: float, seeds: int,
         ratio: float = RATIO) -> Action | None:
    """The next run of the shrink search over a study's records (search trials with their seed runs attached), or
    WAIT, or None once every lineage has ended. `taken`: the seeds of confirm runs running or queued, per trial.
    Lineages in order of their root's size; in each, from the last passing design: none yet, the width step is made;
    the width step open, it is raced; failed, it is repaired (`repair`), or the lineage ends. With no pass at all,
    the one lineage starts from `closest_fail`, repaired first."""
    steps: dict[int, list[TrialRecord]] = {}
    for r in recs:
        if r.shrink_of is not None and r.status in (*ENDED, *IN_FLIGHT):
            steps.setdefault(r.shrink_of, []).append(r)
    judged = verdicts(recs, target, seeds)
    roots = sorted((r for r in recs if r.shrink_of is None and judged.get(r.number) == "pass" and r.candidate),
                   key=lambda r: (r.params, r.number))
    smallest = min((r.params for r in recs if judged.get(r.number) == "pass"), default=math.inf)
    if not roots and (closest := closest_fail(recs, judged)):
        roots = [closest]
    for root in roots:
        node = root
        while passed := [k for k in steps.get(node.number, []) if judged.get(k.number) == "pass"]:
            node = passed[0]
        tried = steps.get(node.number, [])
        if judged.get(node.number) == "fail":  # the closest fail, no pass anywhere: repaired like a failed step
            tried = [node, *tried]
        if not tried:
            spec = step_spec(node.candidate.spec, min(node.params * ratio, smallest), min(node.params, smallest))
            if spec is not None and expressible(step := Candidate(spec, node.candidate.train)):
                share = round(100 * spec.num_params() / node.params)
                return Action("step", node.number, candidate=step, move=f"shrink to {share} %", move_of=node.number)
        elif judged.get(tried[0].number) is None:
            return _race(tried[0], taken, seeds)
        elif action := repair(node.number, tried, judged, taken, seeds, smallest):
            return action
    return None


def closest_fail(recs: list[TrialRecord], judged: dict[int, str | None]) -> TrialRecord | None:
    """The design the confirmation race came closest with when nothing passed: the failed search trial with >= 2
    seeds and the best mean val that the space can express (its repairs are moves). Why: at a budget under every
    known pass (`--max-params 3000`: the zoo's designs scaled down fail by a hair) the search would end with nothing,
    where one recipe move may pass."""
    failed = [r for r in recs if r.shrink_of is None and judged.get(r.number) == "fail" and r.n_seeds >= 2
              and r.candidate and expressible(r.candidate)]
    return max(failed, key=lambda r: (r.mean_val(), -r.number), default=None)


def _race(step: TrialRecord, taken: dict[int, set[int]], seeds: int) -> Action:
    """The next run of an open step's race: the step itself if it waits to be trained again, else its next seed."""
    if step.status == "waiting":  # a step queued again after its worker died: it is trained first
        return Action("run", step.number)
    if step.candidate is None:  # its first run has not started: nothing to add yet
        return WAIT
    own = step.candidate.train.seed
    started = {s.seed for s in step.seeds} | taken.get(step.number, set()) | {own}
    if len(started) >= seeds:
        return WAIT
    return Action("seed", step.number, seed=next(own + k for k in range(1, 10 * seeds) if own + k not in started))


def repair(of: int, tried: list[TrialRecord], judged: dict[int, str | None], taken: dict[int, set[int]],
           seeds: int, smallest: float) -> Action | None:
    """The next run repairing the failed width step `tried[0]` (`tried[1:]`: its repairs so far), or None once the
    lineage ends. First a screen: each same-size neighbour (`moves.same_size`) not tried yet is made a step and
    trained once, on the study's seed, in the moves' order, as many at once as there are workers. Then, once every
    screen run has ended, a race: the open repairs, best screened first, get seeds as a step does (one already raced
    is raced on first) until REPAIRS of them have been raced; a repair that passes carries the lineage on. Why screen
    them all: local search's best-improvement step (White et al. 2021), here over a dozen one-run candidates; the two
    drawn at random in `sbs-r-3k5s20` both lost. None too at a size that another lineage's pass already beats."""
    width, repairs = tried[0], tried[1:]
    if width.params >= smallest:
        return None
    if queued := next((k for k in repairs if k.status == "waiting"), None):  # e.g. queued again: its worker died
        return Action("run", queued.number)
    moves = {k.move for k in repairs}
    done = [params_of(k.candidate) for k in tried if k.candidate]  # a queued trial has its move, not its candidate
    if untried := [(name, c) for name, c in same_size(width.candidate)
                   if f"repair: {name}" not in moves and params_of(c) not in done]:
        name, candidate = untried[0]
        return Action("step", of, candidate=candidate, move=f"repair: {name}", move_of=width.number)
    if any(k.status in IN_FLIGHT for k in repairs):  # the race starts from the whole screen
        return WAIT
    raced = {k.number for k in repairs if k.n_seeds > 1 or k.number in taken}
    open_ = sorted((k for k in repairs if judged.get(k.number) is None),
                   key=lambda k: (k.number not in raced, -k.mean_val()))
    for k in open_:
        if k.number in raced or len(raced) < REPAIRS:
            return _race(k, taken, seeds)
    return None


def step_spec(spec: ArchSpec, goal: float, limit: int) -> ArchSpec | None:
    """The copy of `spec` under `limit` params nearest `goal`: widths move in even steps, so the widest copy under
    the goal can be a far bigger step (3,370 -> 2,668, 79 %, skipping 2,966 at 88 %). Inside the space's widths,
    since a step is a search trial."""
    floors = tuple(lo for lo, _ in WIDTHS.values())
    under = [c for c in copies(spec, floors) if c.num_params() < limit]
    return min(under, key=lambda c: (abs(c.num_params() - goal), c.num_params()), default=None)


def _queue(study: optuna.Study, confirm: optuna.Study, target: float, seeds: int, may_step: bool) -> Action | None:
    """Under the planning lock: queue the plan's next run (a step first in the search study's queue, a seed in the
    confirm study's), or say to wait or that the search is over. Any worker queues a new step and then takes the
    oldest queued step, so each takes one; a step queued earlier and not taken (its worker died) is taken only by a
    worker that `may_step` (one per command), so two workers do not both reach for it."""
    recs = search_records(study)
    taken: dict[int, set[int]] = {}
    for r in records(confirm.get_trials(deepcopy=False)):
        if r.status in IN_FLIGHT and r.confirms is not None:
            taken.setdefault(r.confirms, set()).add(r.seed)
    action = plan(recs, taken, target, seeds)
    if action is None or action is WAIT:
        return action
    if action.kind == "run":
        return action if may_step else WAIT
    if action.kind == "seed":
        step = recs[action.of]
        confirm.enqueue_trial({}, user_attrs={"confirms": action.of, "seed": action.seed,
                                              "candidate": step.candidate.to_dict(), "params": step.params})
        return action
    waiting = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if "shrink_of" not in t.user_attrs]  # another worker's step, about to be taken, stays in place
    study.enqueue_trial(params_of(action.candidate), user_attrs={"shrink_of": action.of, "move": action.move,
                                                                  "move_of": action.move_of, "prune_from": None})
    requeue_behind(study, waiting)  # the steps are the next trials `optimize` takes
    return action


def shrink_worker(w: Worker, seeds: int) -> None:
    """Train the shrink search's runs (steps and seeds) until every lineage has ended."""
    s = w.settings
    nop = optuna.pruners.NopPruner()  # a step trains to its end: the race decides, not a rung
    study = optuna.load_study(study_name=s.study_name, storage=w.storage, pruner=nop)
    confirm = optuna.load_study(study_name=s.study_name + CONFIRM_SUFFIX, storage=w.storage, pruner=nop)
    objective = Objective(w.data, s.budget, w.store, goal=s.goal, runtime=w.runtime, seed=s.seed)
    seed_run = seed_objective(w)

    def step(trial: optuna.Trial) -> float:
        if "shrink_of" not in trial.user_attrs:  # another machine's worker took the step: this one is not run
            give_back(study, trial, "not trained: the shrink search's step was taken by another worker")
        a = trial.user_attrs
        print(f"shrink: #{trial.number} {a['move']} of #{a['move_of']}", flush=True)
        value = objective(trial)
        a = trial.user_attrs  # a copy: now with the run's params and score
        print(f"shrink: #{trial.number} {a['params']:,} params, seed {s.seed}: val {a['val_score']:.2%}", flush=True)
        return value

    while True:
        raise_if_stopped()
        recover_lost_trials(study)  # a step or run whose worker died is queued again
        recover_lost_trials(confirm)
        with planning_lock(w.storage, s.study_name):
            action = _queue(study, confirm, s.goal.target, seeds, may_step=w.index == 0)
        if action is None:
            return
        if action is WAIT:
            time.sleep(WAIT_POLL)
        elif action.kind in ("step", "run"):
            study.optimize(step, n_trials=1)
        else:
            confirm.optimize(seed_run, n_trials=1)


def shrink_steps(study: optuna.Study, seeds: int) -> list[tuple[TrialRecord, str | None]]:
    """Every step with its verdict, in trial order (for the closing lines)."""
    recs = search_records(study)
    judged = verdicts(recs, StudyMeta.of(study).goal.target, seeds)
    return [(r, judged[r.number]) for r in recs if r.shrink_of is not None and r.number in judged]
