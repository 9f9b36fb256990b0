"""The search space: how much of it fits the budgets, `params_of` as suggest's inverse, the warm start."""

from __future__ import annotations

import collections

import optuna
import pytest
from optuna.trial import TrialState

from nas20k.core.factory import PRESETS, SpecError
from nas20k.core.recipe import OPTIMIZERS
from nas20k.core.space import (
    DROPOUT_AT,
    SEARCHED_SCHEDULES,
    Candidate,
    _dropout_convs,
    params_of,
    suggest,
    warm_start,
)

N = 1000


@pytest.fixture(scope="module")
def samples() -> list[tuple[dict, Candidate]]:
    """N RandomSampler draws from the space: (the trial's params, the candidate)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(N):
        trial = study.ask()
        candidate = suggest(trial, 20)
        out.append((dict(trial.params), candidate))
        study.tell(trial, state=TrialState.PRUNED)
    return out


def test_share_of_the_space_under_each_budget(samples):
    sizes = []
    for _, c in samples:
        try:
            sizes.append(c.spec.num_params())
        except SpecError:  # shrinks the image below 1x1: rejected at zero cost, like an over-budget one
            sizes.append(None)
    share = {budget: sum(s is not None and s < budget for s in sizes) / N for budget in (20_000, 8_000, 6_000)}
    print(f"\nshare of {N} random candidates under 20k / 8k / 6k params: "
          + " / ".join(f"{v:.1%}" for v in share.values()))
    # measured at seed 0: ~78 %, ~52 %, ~45 % (half the samples have separable convs); loose bounds on purpose
    assert 0.65 <= share[20_000] <= 0.90
    assert 0.40 <= share[8_000] <= 0.65
    assert 0.33 <= share[6_000] <= 0.58
    assert share[20_000] > share[8_000] > share[6_000]


def test_every_choice_is_sampled(samples):
    optimizers = collections.Counter(c.train.optimizer for _, c in samples)
    schedules = collections.Counter(c.train.schedule for _, c in samples)
    heads = collections.Counter(c.spec.head for _, c in samples)
    assert set(optimizers) == set(OPTIMIZERS) and min(optimizers.values()) > N / 10
    assert set(schedules) == set(SEARCHED_SCHEDULES) and min(schedules.values()) > N / 10
    assert set(heads) == {"gap", "fc", "conv", "direct"}
    assert {len(c.spec.blocks) for _, c in samples} == {2, 3}
    assert any(0 in c.spec.transitions for _, c in samples) and any(any(c.spec.transitions) for _, c in samples)
    assert {c.spec.bias for _, c in samples} == {True, False}
    assert {c.spec.squeeze_bn for _, c in samples} == {True, False}
    assert {c.spec.separable for _, c in samples} == {True, False}
    # direct: always buildable logits
    assert all(c.spec.head != "direct" or c.spec.blocks[-1][-1] == 10 for _, c in samples)


def test_params_of_inverts_suggest_for_random_candidates(samples):
    for params, candidate in samples:
        p = params_of(candidate)
        assert suggest(optuna.trial.FixedTrial(p), 20).to_dict() == candidate.to_dict()
        assert set(p) == set(params)
        differ = {k for k in p if p[k] != params[k]}
        # where two Dropout placements coincide (one conv per block), params_of names the first
        assert differ <= {"dropout_at"}
        if differ:
            blocks = list(candidate.spec.blocks)
            assert _dropout_convs(params["dropout_at"], blocks) == _dropout_convs(p["dropout_at"], blocks)
            assert DROPOUT_AT.index(p["dropout_at"]) < DROPOUT_AT.index(params["dropout_at"])


def test_params_of_inverts_suggest_for_the_warm_start():
    starts = warm_start(epochs=15, seed=4)
    assert {"firekind-6174", "nitinvig-7070"} <= set(starts)
    for candidate in starts.values():
        p = params_of(candidate)
        back = suggest(optuna.trial.FixedTrial(p), 15, 4)
        assert back.to_dict() == candidate.to_dict()
        assert back.train.epochs == 15 and back.train.seed == 4
    assert starts["firekind-6174"].spec == PRESETS["firekind-6174"]  # exactly the published design
    assert starts["firekind-6174"].spec.num_params() == 6_174
    assert starts["nitinvig-7070"].spec.num_params() == 7_070  # Dropout added, no parameter added
    # queued first under 20k
    assert list(starts)[:4] == ["nas20k-14838", "nas20k-19674", "nas20k-14568", "nas20k-16424"]
    assert [starts[n].spec.num_params() for n in list(starts)[:4]] == [14_838, 19_674, 14_568, 16_424]
    # Dropout is on the requirement list
    assert all(c.spec.dropout > 0 and c.spec.dropout_after for c in starts.values())


@pytest.mark.parametrize("change", [
    # a width above block 1's range (the seed preset)
    {"blocks": ((8, 16, 32), (16, 16)), "transitions": (8,), "padding": (), "head": "fc"},
    {"blocks": ((8,), (8,), (8,), (8,)), "transitions": (0, 0, 0), "padding": ()},  # a 4th block
    {"dropout_after": (0,)},  # a Dropout placement the space has no name for
    {"padding": (1, 1, 1), "blocks": ((8, 8, 8, 8), (12, 12), (16, 10))},  # 4 convs in a block
])
def test_params_of_refuses_what_the_space_cannot_express(change):
    firekind = warm_start(20)["firekind-6174"]
    spec = PRESETS["firekind-6174"].to_dict() | {"dropout_after": (1,)} | change
    with pytest.raises(ValueError, match="cannot express"):
        params_of(Candidate(type(firekind.spec)(**spec), firekind.train))
