"""The zoo as data: the packaged file round-trips and refuses what it does not know, the warm start reads it, and
`nas20k zoo add` puts a confirmed winner with its evidence into the user's zoo, which the next study queues."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from conftest import SMALL, cli

from nas20k.core import zoo
from nas20k.core.data import DataSplit
from nas20k.core.space import params_of, warm_start
from nas20k.readers.record import StudyMeta, search_records

ROOT = Path(__file__).resolve().parents[1]


def test_the_packaged_zoo_round_trips_and_every_design_is_in_the_space():
    entries = zoo.load(zoo.PACKAGED)
    assert entries and [zoo.ZooEntry.from_dict(json.loads(json.dumps(e.to_dict()))) for e in entries] == entries
    for e in entries:
        params_of(warm_start(15, zoo=[e])[e.name])  # raises if the search space cannot express it
        assert e.evidence is not None or e.source, f"{e.name}: neither a study's evidence nor a public source"
        if e.evidence:
            assert e.evidence.seeds >= 2 and e.evidence.study.startswith("studies/")


def test_evidence_order_moves_a_design_ahead_only_where_its_group_tells_them_apart():
    base = next(e for e in zoo.load(zoo.PACKAGED) if e.evidence)

    def entry(name: str, val: float, budget: tuple[int, int] = (20000, 20), split: int = 1) -> zoo.ZooEntry:
        ev = replace(base.evidence, budget=budget, split_seed=split, val_mean=val, val_sd=0.0005, seeds=5)
        return replace(base, name=name, evidence=ev)

    a, b, tie = entry("a", 0.9950), entry("b", 0.9960), entry("tie", 0.99602)  # se of a difference: 0.032 points
    other_budget, other_split = entry("c", 0.9990, budget=(8000, 15)), entry("d", 0.9990, split=0)
    public = replace(base, name="p", evidence=None)
    order = zoo.in_evidence_order([a, other_budget, public, b, other_split, tie])
    assert [e.name for e in order] == ["b", "c", "p", "tie", "d", "a"]  # b, tie ahead of a; b and tie: a tie


def test_the_packaged_zoo_is_in_the_order_its_fresh_split_evidence_gives():
    """Every search chose its designs on split seed 0 (the default); their zoo figures are a re-confirmation on
    another split (benchmarks/zoo_recheck.py --write), and those figures, not a person, order the warm start."""
    entries = zoo.load(zoo.PACKAGED)
    for e in entries:
        if e.evidence:
            assert e.evidence.split_seed != 0 and e.evidence.found_in, f"{e.name}: scored on the split it was chosen on"
    assert zoo.in_evidence_order(entries) == entries


@pytest.mark.parametrize("entry", [e for e in zoo.load(zoo.PACKAGED) if e.evidence], ids=lambda e: e.name)
def test_a_packaged_designs_figures_are_what_its_committed_study_holds(entry):
    """No figure in the zoo is typed by hand: its design is the study's trial, and n, mean, sd and split (0 for a
    study from before the split was recorded) are what that trial's seeds give; `benchmarks/zoo_recheck.py --write`
    is how they change."""
    ev = entry.evidence
    study = optuna.load_study(study_name=ev.study_name, storage=f"sqlite:///{ROOT / ev.study}")
    r = next(r for r in search_records(study) if r.number == ev.trial)
    meta = StudyMeta.of(study)
    assert r.candidate.spec == entry.spec
    assert (r.n_seeds, (meta.data or DataSplit()).split_seed) == (ev.seeds, ev.split_seed)
    assert (r.mean_val(), r.sd_val()) == pytest.approx((ev.val_mean, ev.val_sd), abs=1e-9)
    assert r.mean_test_last3() == pytest.approx(ev.test_mean, abs=1e-9)
    budget = (meta.budget.max_params, meta.budget.max_epochs)
    assert (budget, meta.goal.kind, r.epochs) == (ev.budget, ev.goal, ev.epochs)


@pytest.mark.parametrize("where, bad", [
    ("entry", {"colour": "red"}),
    ("evidence", {"n_runs": 3}),
    ("recipe", {"lr_typo": 0.1}),
    ("spec", {"widths": [8]}),
])
def test_a_zoo_file_with_an_unknown_key_is_refused_in_one_line(tmp_path: Path, where: str, bad: dict):
    entry = zoo.load(zoo.PACKAGED)[0].to_dict()
    (entry if where == "entry" else entry[where]).update(bad)
    path = tmp_path / "zoo.json"
    path.write_text(json.dumps({"entries": [entry]}))
    with pytest.raises(zoo.UserError, match=f"unknown .*{next(iter(bad))}"):
        zoo.load(path)
    path.write_text("{not json")
    with pytest.raises(zoo.ZooError, match="not valid JSON"):
        zoo.load(path)


def test_zoo_add_puts_a_confirmed_winner_in_the_users_zoo_and_the_next_study_queues_it(study_copy: Path,
                                                                                      tmp_path: Path, monkeypatch):
    mine = tmp_path / "my-zoo.json"
    monkeypatch.setenv("NAS20K_ZOO", str(mine))
    r = cli("zoo", "add", cwd=study_copy)
    assert r.exit_code == 1 and "not confirmed" in r.output  # one seed: not yet
    assert cli("confirm", "--top", "1", "--seeds", "2", "-q", cwd=study_copy).exit_code == 0
    r = cli("zoo", "add", "--name", "mine", "--follows", "accuracy", cwd=study_copy)
    assert r.exit_code == 0, r.output
    (entry,) = zoo.load(mine)
    assert entry.name == "mine" and entry.evidence.seeds == 2 and entry.follows == ("accuracy",)
    assert entry.evidence.study == "sqlite:///studies/nas20k.db" and entry.evidence.split_seed == 0
    assert cli("zoo", "add", "--name", "mine", cwd=study_copy).exit_code == 1  # the name is taken
    assert cli("zoo", "add", "--name", "nas20k-14838", cwd=study_copy).exit_code == 1  # so is a packaged one's
    listed = cli("zoo", cwd=study_copy).output
    assert "mine" in listed.splitlines()[-2] and str(mine) in listed
    # a new study under the same budget queues it among the zoo's designs, after the packaged ones
    r = cli("search", "--study-name", "next", "--trials", "1", *SMALL, "--jobs", "1", "--confirm-top", "0", "-q",
            cwd=study_copy)
    assert r.exit_code == 0, r.output
    queued = next(line for line in r.output.splitlines() if line.startswith("warm start queued:"))
    assert "mine" in queued
