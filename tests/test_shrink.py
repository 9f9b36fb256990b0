"""The smallest goal's shrink search: the race on a step, a lineage that stops at its first failing step (on recorded
values), a later lineage that starts under the smallest pass; and a real search that shrinks its winner."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import cli, load

from nas20k.base.mission import Budget
from nas20k.core.factory import PRESETS, scaled
from nas20k.core.recipe import TrainConfig
from nas20k.core.space import Candidate, expressible
from nas20k.readers.record import SeedRun, StudyMeta, TrialRecord, search_records
from nas20k.readers.results import smallest_record
from nas20k.runner.shrink import RATIO, WAIT, Action, plan, step_spec, verdict
from nas20k.runner.study import trained_count

TARGET, SEEDS = 0.994, 5
SPEC = PRESETS["nas20k-5826"]


def record(number: int, spec, vals: list[float], shrink_of: int | None = None, status: str = "complete",
           seed: int = 0) -> TrialRecord:
    """A search trial as the study would hold it: its own run on `seed`, then confirm runs on seed + 1, + 2, ..."""
    cand = Candidate(spec, TrainConfig(epochs=15, seed=seed))
    r = TrialRecord(number, status, candidate=cand, params=spec.num_params(), shrink_of=shrink_of,
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


def test_a_lineage_stops_at_its_first_failing_step_and_keeps_the_smallest_pass() -> None:
    """Recorded values: the root passes, step 1 passes, step 2 fails on two seeds; nothing more is run, and
    `best --smallest` picks step 1."""
    s1, s2 = scaled_to(RATIO), scaled_to(RATIO * RATIO)
    root = record(0, SPEC, [0.9950, 0.9948, 0.9951, 0.9947, 0.9949])
    step1 = record(1, s1, [0.9944, 0.9943, 0.9946, 0.9942, 0.9945], shrink_of=0)
    step2 = record(2, s2, [0.9925, 0.9928], shrink_of=1)
    assert plan([root, step1, step2], {}, TARGET, SEEDS) is None
    meta = StudyMeta(budget=Budget(7000, 15))
    assert smallest_record([root, step1, step2], meta, "s", TARGET).number == 1

    # the same lineage one run earlier: step 2 has one seed close to the target, so it gets its next seed
    close = record(2, s2, [0.9938], shrink_of=1)
    assert plan([root, step1, close], {}, TARGET, SEEDS) == Action("seed", 2, seed=1)
    # ... and while that seed runs, nothing else (one step at a time per lineage), unless seeds are left
    assert plan([root, step1, close], {2: {1, 2, 3, 4}}, TARGET, SEEDS) is WAIT
    # before step 2 existed: step 1 passed, so the next step is step 1's copy nearest RATIO of its parameters
    nxt = plan([root, step1], {}, TARGET, SEEDS)
    assert nxt == Action("step", 1, spec=step_spec(s1, RATIO * s1.num_params(), s1.num_params()))
    assert nxt.spec.num_params() < s1.num_params()
    # the root passed but its confirmation is not over: no lineage starts from it yet
    assert plan([record(0, SPEC, [0.9950, 0.9948])], {}, TARGET, SEEDS) is None


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
    """A diverged first run is a failing step (no seed runs are queued for it), and the next lineage goes on."""
    root = record(0, SPEC, [0.9950] * 5)
    diverged = record(1, scaled_to(RATIO), [], shrink_of=0, status="diverged")
    assert plan([root, diverged], {}, TARGET, SEEDS) is None
    big = record(2, PRESETS["nas20k-7458"], [0.9952] * 5)
    nxt = plan([root, diverged, big], {}, TARGET, SEEDS)
    assert nxt.kind == "step" and nxt.of == 2 and nxt.spec.num_params() < root.params


def test_a_later_lineage_starts_under_the_smallest_pass_and_failed_steps_are_redone() -> None:
    small = record(0, scaled_to(0.6), [0.9945] * 5)
    failed_step = record(1, scaled_to(0.6 * RATIO), [0.9900], shrink_of=0)  # lineage 1 ended here
    big = record(2, SPEC, [0.9952] * 5)
    nxt = plan([small, failed_step, big], {}, TARGET, SEEDS)
    assert nxt.kind == "step" and nxt.of == 2 and nxt.spec.num_params() < small.params
    # a step whose first run was interrupted does not count: the step is queued anew
    interrupted = replace(record(3, nxt.spec, [], shrink_of=2, status="interrupted"))
    assert plan([small, failed_step, big, interrupted], {}, TARGET, SEEDS) == nxt
    # a step queued again after its worker died is trained before anything else
    requeued = record(4, nxt.spec, [], shrink_of=2, status="waiting")
    assert plan([small, failed_step, big, interrupted, requeued], {}, TARGET, SEEDS) == Action("run", 4)


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
        assert s.status == "complete" and s.params < parent.params
        assert s.candidate.spec == step_spec(parent.candidate.spec, RATIO * parent.params, parent.params)
        assert s.epochs == 2 and s.move.startswith("shrink to ")
        assert [run.seed for run in parent.seeds] == [0, 1]  # the parent passed on both seeds first
    last = steps[-1]  # the lineage ended: its first failing step, or a pass that no longer shrinks
    smaller = step_spec(last.candidate.spec, RATIO * last.params, last.params)
    ended = smaller is None or not expressible(Candidate(smaller, last.candidate.train))
    assert last.mean_val() < 0.8 or last.n_seeds == 2 and ended
    assert f"#{last.number} {last.params:,} params (shrink to" in r.stdout
    r = cli("best", "--smallest", "--target", "0.8", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    passing = [s for s in steps if s.n_seeds == 2 and s.mean_val() >= 0.8]
    if passing:
        assert f"trial #{min(passing, key=lambda s: s.params).number}" in r.stdout
