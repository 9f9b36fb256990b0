"""The smallest goal's shrink search: the race on a step, a lineage that stops at its first failing size (its width
step and that step's repairs, on recorded values), a later lineage that starts under the smallest pass; and a real
search that shrinks its winner."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import cli, load

from nas20k.base.mission import Budget
from nas20k.core.factory import PRESETS, scaled
from nas20k.core.moves import same_size
from nas20k.core.recipe import TrainConfig
from nas20k.core.space import Candidate, expressible, params_of
from nas20k.readers.record import SeedRun, StudyMeta, TrialRecord, search_records
from nas20k.readers.results import smallest_record
from nas20k.runner.shrink import RATIO, REPAIRS, WAIT, Action, plan, repair, step_spec, verdict
from nas20k.runner.study import trained_count

TARGET, SEEDS = 0.994, 5
SPEC = PRESETS["nas20k-5826"]


def record(number: int, spec, vals: list[float], shrink_of: int | None = None, status: str = "complete",
           seed: int = 0, train: TrainConfig | None = None, move: str | None = None) -> TrialRecord:
    """A search trial as the study would hold it: its own run on `seed`, then confirm runs on seed + 1, + 2, ..."""
    cand = Candidate(spec, train or TrainConfig(epochs=15, seed=seed))
    r = TrialRecord(number, status, candidate=cand, params=spec.num_params(), shrink_of=shrink_of, move=move,
                    val_score=vals[0] if vals and status == "complete" else None)
    if status == "complete":
        r.seeds = [SeedRun(seed + k, v, None, number, confirm=k > 0) for k, v in enumerate(vals)]
    return r


def scaled_to(share: float):
    return scaled(SPEC, int(SPEC.num_params() * share))


def test_the_race_on_a_step_fails_early_and_passes_only_on_all_its_seeds() -> None:
    assert verdict([], TARGET, SEEDS) is None
    assert verdict([0.9900], TARGET, SEEDS) == "fail"  # far under: no more seeds
    assert verdict([0.9942], TARGET, SEEDS) is None  # a pass on one seed is a draw, not a result
    assert verdict([0.9942] * 4, TARGET, SEEDS) is None
    assert verdict([0.9942] * 5, TARGET, SEEDS) == "pass"
    assert verdict([0.9945, 0.9935, 0.9940, 0.9938, 0.9939], TARGET, SEEDS) == "fail"  # mean 99.394 %
    assert verdict([0.9939, 0.9938], TARGET, SEEDS) is None  # close: raced on


def width_step(of: TrialRecord) -> Action:
    spec = step_spec(of.candidate.spec, RATIO * of.params, of.params)
    return Action("step", of.number, candidate=Candidate(spec, of.candidate.train),
                  move=f"shrink to {round(100 * spec.num_params() / of.params)} %", move_of=of.number)


def screened(recs: list[TrialRecord], val=lambda move: 0.9900) -> list[TrialRecord]:
    """`recs` with each repair the plan asks for next (the screen: one run per neighbour) recorded with one run of
    `val(move)` (by default a fail)."""
    while (fix := plan(recs, {}, TARGET, SEEDS)) and fix.kind == "step" and fix.move.startswith("repair: "):
        recs = [*recs, record(len(recs), fix.candidate.spec, [val(fix.move)], shrink_of=fix.of,
                              train=fix.candidate.train, move=fix.move)]
    return recs


def test_a_lineage_stops_at_its_first_failing_size_and_keeps_the_smallest_pass() -> None:
    """Recorded values: the root passes, step 1 passes, step 2 fails on two seeds; each of step 2's same-size
    neighbours is screened on one run, the REPAIRS best open ones are raced (best first) and fail; nothing more is
    run, and `best --smallest` picks step 1."""
    s1, s2 = scaled_to(RATIO), scaled_to(RATIO * RATIO)
    root = record(0, SPEC, [0.9950, 0.9948, 0.9951, 0.9947, 0.9949])
    step1 = record(1, s1, [0.9944, 0.9943, 0.9946, 0.9942, 0.9945], shrink_of=0)
    step2 = record(2, s2, [0.9925, 0.9928], shrink_of=1)
    close = {"repair: lr /1.5": 0.9938, "repair: dropout /1.5": 0.9937, "repair: batch 64": 0.9936}
    recs = screened([root, step1, step2], lambda move: close.get(move, 0.9900))
    screen = recs[3:]
    assert [(r.move.removeprefix("repair: "), params_of(r.candidate)) for r in screen] == [
        (m, params_of(c)) for m, c in same_size(step2.candidate)]  # every neighbour once, in the moves' order
    assert all(r.shrink_of == 1 and r.params == step2.params for r in screen)
    by_move = {r.move: r.number for r in screen}
    for move in sorted(close, key=close.get, reverse=True)[:REPAIRS]:  # raced best first, each to its end: a fail
        n = by_move[move]
        assert plan(recs, {}, TARGET, SEEDS) == Action("seed", n, seed=1)
        recs[n] = record(n, recs[n].candidate.spec, [close[move], 0.9930, 0.9931, 0.9930, 0.9929], shrink_of=1,
                         train=recs[n].candidate.train, move=move)
    assert REPAIRS < len(close) and plan(recs, {}, TARGET, SEEDS) is None  # the other open ones are not raced
    meta = StudyMeta(budget=Budget(7000, 15))
    assert smallest_record(recs, meta, "s", TARGET).number == 1

    # the same lineage one run earlier: step 2 has one seed close to the target, so it gets its next seed
    close2 = record(2, s2, [0.9938], shrink_of=1)
    assert plan([root, step1, close2], {}, TARGET, SEEDS) == Action("seed", 2, seed=1)
    # ... and while that seed runs, nothing else (one step at a time per lineage), unless seeds are left
    assert plan([root, step1, close2], {2: {1, 2, 3, 4}}, TARGET, SEEDS) is WAIT
    # before step 2 existed: step 1 passed, so the next step is step 1's copy nearest RATIO of its parameters
    nxt = plan([root, step1], {}, TARGET, SEEDS)
    assert nxt == width_step(step1) and nxt.candidate.spec.num_params() < s1.num_params()
    # the root passed but its confirmation is not over: no lineage starts from it yet
    assert plan([record(0, SPEC, [0.9950, 0.9948])], {}, TARGET, SEEDS) is None


def test_a_repair_that_passes_carries_the_lineage_on_from_its_size() -> None:
    root = record(0, SPEC, [0.9950] * 5)
    step = record(1, scaled_to(RATIO), [0.9936, 0.9937, 0.9938, 0.9936, 0.9937], shrink_of=0)  # 99.368 %: a fail
    fix = plan([root, step], {}, TARGET, SEEDS)
    assert fix.move.startswith("repair: ") and fix.candidate.spec.num_params() == step.params
    repaired = record(2, fix.candidate.spec, [0.9941] * 5, shrink_of=0, train=fix.candidate.train)
    assert plan([root, step, repaired], {}, TARGET, SEEDS) == width_step(repaired)
    # a repair open after its screen run is raced once the screen is over, not before
    racing = record(2, fix.candidate.spec, [0.9941], shrink_of=0, train=fix.candidate.train)
    assert plan([root, step, racing], {}, TARGET, SEEDS).move.startswith("repair: ")
    assert plan(screened([root, step, racing]), {}, TARGET, SEEDS) == Action("seed", 2, seed=1)
    # while a screen run trains, the next neighbour is made (a worker each), known by its move before its candidate
    # is written; the race waits for the whole screen; one queued again after its worker died is trained first
    running = record(2, fix.candidate.spec, [], shrink_of=0, status="running", train=fix.candidate.train, move=fix.move)
    nxt = plan([root, step, running], {}, TARGET, SEEDS)
    assert nxt.kind == "step" and nxt.move.startswith("repair: ") and nxt.move != fix.move
    assert plan([root, step, replace(running, candidate=None)], {}, TARGET, SEEDS) == nxt
    assert plan(screened([root, step, running]), {}, TARGET, SEEDS) is WAIT
    waiting = replace(running, status="waiting", candidate=None)
    assert plan([root, step, waiting], {}, TARGET, SEEDS) == Action("run", 2)
    # no repair at a size that another lineage's pass already beats: the lineage just ends
    assert repair(0, [step], {1: "fail"}, {}, SEEDS, smallest=step.params + 1) == fix
    assert repair(0, [step], {1: "fail"}, {}, SEEDS, smallest=step.params) is None


def test_with_no_pass_the_closest_fail_is_repaired_first() -> None:
    """A budget under every pass (`--max-params 3000`): the raced design with the best mean that still failed is
    repaired like a failed step; a repair that passes starts the shrink search from its size."""
    closest = record(0, SPEC, [0.9936, 0.9937, 0.9938, 0.9936, 0.9937])  # 99.368 %: fails 99.4 %
    further = record(1, scaled_to(0.7), [0.9920, 0.9921])
    lone = record(2, scaled_to(0.8), [0.9939])  # one seed, not raced: open, not a fail
    fix = plan([closest, further, lone], {}, TARGET, SEEDS)
    assert fix.kind == "step" and fix.of == 0 and fix.move_of == 0 and fix.move.startswith("repair: ")
    assert fix.candidate.spec.num_params() == closest.params
    recs = screened([closest, further, lone])
    assert len(recs) == 3 + len(same_size(closest.candidate)) and plan(recs, {}, TARGET, SEEDS) is None
    repaired = record(3, fix.candidate.spec, [0.9941] * 5, shrink_of=0, train=fix.candidate.train, move=fix.move)
    assert plan([closest, further, lone, repaired], {}, TARGET, SEEDS) == width_step(repaired)
    assert plan([record(0, SPEC, [0.9900])], {}, TARGET, SEEDS) is None  # one seed is no race: nothing to repair


def test_a_step_is_the_copy_nearest_the_ratio_not_the_widest_under_it() -> None:
    """`sbs-c-3k5s20`: the pass, `nas20k-separable-4578` scaled to 3,370 params, was stepped to 2,668 (79 %), the
    widest copy under 85 %, skipping 2,966 (88 %) and 3,052; the nearest copy is 2,966."""
    spec = scaled(PRESETS["nas20k-separable-4578"], 3500)
    assert spec.num_params() == 3370
    assert scaled(spec, int(RATIO * 3370)).num_params() == 2668
    assert step_spec(spec, RATIO * 3370, 3370).num_params() == 2966
    assert step_spec(spec, RATIO * 3370, 2900).num_params() == 2668  # under the smallest pass so far
    narrowest = step_spec(spec, 0, 3370)  # the copy nearest 0 params: every width at the space's floor
    assert step_spec(narrowest, 0, narrowest.num_params()) is None  # nothing narrower left


def test_a_step_that_diverged_ends_its_lineage() -> None:
    """A diverged first run is a failing step (no seed runs are queued for it): its repairs come next (a lower
    learning rate is one of them), and once they fail too the next lineage goes on."""
    root = record(0, SPEC, [0.9950] * 5)
    diverged = record(1, scaled_to(RATIO), [], shrink_of=0, status="diverged")
    assert plan([root, diverged], {}, TARGET, SEEDS).move_of == 1
    recs = screened([root, diverged])
    assert len(recs) == 2 + len(same_size(diverged.candidate)) and plan(recs, {}, TARGET, SEEDS) is None
    big = record(len(recs), PRESETS["nas20k-7458"], [0.9952] * 5)
    nxt = plan([*recs, big], {}, TARGET, SEEDS)
    assert nxt.kind == "step" and nxt.of == big.number and nxt.candidate.spec.num_params() < root.params


def test_a_later_lineage_starts_under_the_smallest_pass_and_failed_steps_are_redone() -> None:
    small = record(0, scaled_to(0.6), [0.9945] * 5)
    ended = screened([small, record(1, scaled_to(0.6 * RATIO), [0.9900], shrink_of=0)])  # lineage 1
    big = record(len(ended), SPEC, [0.9952] * 5)
    recs = [*ended, big]
    nxt = plan(recs, {}, TARGET, SEEDS)
    assert nxt.kind == "step" and nxt.of == big.number and nxt.candidate.spec.num_params() < small.params
    # a step whose first run was interrupted does not count: the step is queued anew
    interrupted = replace(record(len(recs), nxt.candidate.spec, [], shrink_of=big.number, status="interrupted"))
    assert plan([*recs, interrupted], {}, TARGET, SEEDS) == nxt
    # a step queued again after its worker died is trained before anything else
    requeued = record(len(recs) + 1, nxt.candidate.spec, [], shrink_of=big.number, status="waiting")
    assert plan([*recs, interrupted, requeued], {}, TARGET, SEEDS) == Action("run", requeued.number)


@pytest.mark.slow
def test_a_smallest_goal_search_shrinks_its_confirmed_pass(tmp_path) -> None:
    """A real search: the confirmed pass is scaled down step by step, each step raced, until one fails or the net
    stops shrinking; the steps are not counted against --trials, and `best --smallest` reads them."""
    data = ["--limit", "1500", "--val-size", "500", "--max-epochs", "2"]
    r = cli("search", "--goal", "smallest", "--target", "0.8", "--trials", "1", "--max-params", "7000", *data,
            "--jobs", "1", "--confirm-top", "1", "--confirm-seeds", "2", "-q", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "shrink search: each confirmed pass scaled to about 85% of its parameters" in r.stdout
    study = load(tmp_path)
    recs = search_records(study)
    steps = [rec for rec in recs if rec.shrink_of is not None]
    assert steps, r.output
    assert trained_count(study.get_trials(deepcopy=False)) == 1  # --trials counts the search's own trials
    by_number = {rec.number: rec for rec in recs}
    for s in steps:
        parent = by_number[s.shrink_of]
        assert s.status == "complete" and s.params < parent.params and s.epochs == 2
        assert [run.seed for run in parent.seeds] == [0, 1]  # the parent passed on both seeds first
        if s.move.startswith("repair: "):  # a same-size neighbour of its parent's failed width step
            width = by_number[s.move_of]
            assert width.shrink_of == s.shrink_of and width.mean_val() < 0.8 and s.params == width.params
        else:
            assert s.move.startswith("shrink to ")
            assert s.candidate.spec == step_spec(parent.candidate.spec, RATIO * parent.params, parent.params)
    last = steps[-1]  # the lineage ended: at its first failing size, or a pass that no longer shrinks
    smaller = step_spec(last.candidate.spec, RATIO * last.params, last.params)
    ended = smaller is None or not expressible(Candidate(smaller, last.candidate.train))
    assert last.mean_val() < 0.8 or last.n_seeds == 2 and ended
    assert len([s for s in steps if s.params == last.params]) <= 1 + len(same_size(last.candidate))
    assert f"#{last.number} {last.params:,} params ({last.origin})" in r.stdout
    r = cli("best", "--smallest", "--target", "0.8", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    passing = [s for s in steps if s.n_seeds == 2 and s.mean_val() >= 0.8]
    if passing:
        assert f"trial #{min(passing, key=lambda s: s.params).number}" in r.stdout
