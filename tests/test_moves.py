"""Local search: a move changes only the genes it names and stays inside the budget; a search interleaves moves
with TPE's trials and records them."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from conftest import SMALL, cli, load
from optuna.samplers import RandomSampler
from optuna.storages import RDBStorage
from optuna.trial import FixedTrial

from nas20k.core.moves import neighbours, same_size
from nas20k.core.space import params_of, suggest, warm_start
from nas20k.readers.record import records, write
from nas20k.runner.local import enqueue_move


def genes_named(move: str, parent: dict) -> set[str]:
    """The genes a move may touch, read from its name alone."""
    word = move.split()[0]
    if re.fullmatch(r"b\d_(w\d|pad)|t\d_width", word):
        return {word}
    if m := re.fullmatch(r"b(\d)", word):  # +conv / -conv: the count and the block's last width
        return {f"b{m.group(1)}_convs", *(f"b{m.group(1)}_w{j}" for j in range(1, 5))}
    if re.fullmatch(r"t\d", word):  # pool <-> squeeze: the transition, its width, and whether squeezes have BN
        return {word, f"{word}_width", "squeeze_bn"}
    return {"separable": {"separable"}, "dropout": {"dropout"}, "lr": {f"{parent['optimizer']}_lr"},
            "rotate": {"rotate"}, "shift": {"translate"}, "batch": {"batch_size"},
            "schedule": {"schedule", "drop_at"}}[word]


@pytest.mark.parametrize("max_params, epochs", [(20_000, 20), (12_000, 12), (5_000, 15), (3_000, 15)])
def test_a_move_changes_only_the_genes_it_names_and_stays_inside_the_budget(max_params: int, epochs: int):
    designs = warm_start(epochs, max_params=max_params)
    assert designs
    for name, design in designs.items():
        parent = params_of(design)
        moves = neighbours(design, max_params)
        assert len(moves) >= 10, name  # widths, dropout, lr, augmentation, schedule at the least
        assert len({m for m, _ in moves}) == len(moves)
        for move, child in moves:
            changed = {k for k in parent.keys() | child.keys() if parent.get(k) != child.get(k)}
            assert changed and changed <= genes_named(move, parent), (name, move, changed)
            built = suggest(FixedTrial(child), epochs, design.train.seed)
            assert built.spec.num_params() < max_params, (name, move)
            assert params_of(built) == child


@pytest.mark.parametrize("max_params, epochs", [(5_000, 15), (3_000, 20)])
def test_the_same_size_moves_are_the_neighbours_that_keep_the_parameter_count(max_params: int, epochs: int):
    """What the shrink search's repairs draw from: the recipe and padding moves, never a width or a layer."""
    for name, design in warm_start(epochs, max_params=max_params).items():
        n = design.spec.num_params()
        same = same_size(design)
        assert {"lr x1.5", "lr /1.5", "shift +0.5"} <= {m for m, _ in same}, name
        assert [(m, params_of(c)) for m, c in same] == [(m, p) for m, p in neighbours(design, n + 1)
                                                        if suggest(FixedTrial(p), epochs).spec.num_params() == n]
        for move, c in same:
            assert c.spec.num_params() == n and c.spec.blocks == design.spec.blocks, (name, move)
            assert not re.match(r"b\d_w|t\d|b\d [+-]conv|separable", move), (name, move)


def test_moves_are_due_every_third_trained_trial_and_come_from_the_top_designs(tmp_path: Path):
    storage = RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, direction="maximize", sampler=RandomSampler(0))
    budget = 10**6  # the parents' neighbours all fit: this test is about the schedule, not the budget

    def train(value: float) -> int:  # one trial of whatever is queued, else sampled, told `value`
        t = study.ask()
        write(t, candidate=suggest(t, 12).to_dict())
        study.tell(t, value)
        return t.number

    assert enqueue_move(study, storage, budget, 0) is None  # nothing to move from
    train(0.90), train(0.80)
    queued = enqueue_move(study, storage, budget, 0)
    assert queued is not None and enqueue_move(study, storage, budget, 0) is None  # one waits: no second
    move = train(0.85)
    assert study.trials[move].user_attrs["move_of"] in (0, 1) and f"of #{study.trials[move].user_attrs['move_of']}" \
        in queued
    assert enqueue_move(study, storage, budget, 0) is None  # a move just ran
    train(0.70)
    assert enqueue_move(study, storage, budget, 0) is None
    train(0.95)
    assert enqueue_move(study, storage, budget, 0) is not None
    nxt = train(0.5)
    assert study.trials[nxt].user_attrs["move_of"] in (4, 0, 2)  # the three best so far: 0.95, 0.90, 0.85
    params = [t.params for t in study.trials]
    assert all(params.count(t.params) == 1 for t in study.trials)  # no candidate twice


@pytest.mark.slow
def test_a_search_makes_its_third_trained_trial_a_move_of_a_top_design(tmp_path: Path):
    r = cli("search", "--trials", "4", *SMALL, "--jobs", "1", "--no-warm-start", "--confirm-top", "0", "-q",
            cwd=tmp_path)
    assert r.exit_code == 0, r.output
    study = load(tmp_path)
    recs = records(study.get_trials(deepcopy=False))
    trained = [x for x in recs if x.trained]
    moves = [x for x in trained if x.move is not None]
    assert len(trained) == 4 and len(moves) == 1  # the third trained trial
    assert [x.number for x in trained].index(moves[0].number) == 2
    params = [t.params for t in study.trials]
    for m in moves:
        parent = recs[m.move_of]
        assert parent.status == "complete" and parent.number < m.number
        assert params.count(study.trials[m.number].params) == 1  # never a candidate tried before
    table = cli("trials", "--wide", cwd=tmp_path, columns=250).output
    assert f"of #{moves[0].move_of}" in table
    r = cli("search", "--trials", "6", *SMALL, "--jobs", "1", "--no-local-search", "--confirm-top", "0", "-q",
            cwd=tmp_path)
    assert r.exit_code == 0, r.output
    later = [x for x in records(load(tmp_path).get_trials(deepcopy=False)) if x.number > recs[-1].number]
    assert later and all(x.move is None for x in later)
