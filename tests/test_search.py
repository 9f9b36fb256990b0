"""The objective, the gate, selection and the search/best/export commands, on a small real subset."""

import json
import sqlite3
import time

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

import nas20k.objective as objective_mod
from nas20k.data import load_mnist
from nas20k.export import best_trial
from nas20k.objective import Budget, Objective
from nas20k.space import suggest
from nas20k.study import status

from conftest import DATA_DIR, SMALL, nas20k

BIG = {"blocks": 2, "2blocks_b1_convs": 3, "b1_w1": 16, "b1_w2": 16, "b1_w3": 16, "t1_width": 16, "2blocks_b2_convs": 5,
       "b2_w1": 32, "b2_w2": 32, "b2_w3": 32, "b2_w4": 32, "b2_w5": 32, "head": "fc"}
SMALL_NET = {"blocks": 2, "2blocks_b1_convs": 2, "b1_w1": 8, "b1_w2": 8, "t1_width": 8, "2blocks_b2_convs": 2, "b2_w1": 12,
             "b2_w2": 12, "head": "gap", "dropout_at": "block_end", "batch_size": 128}


def make_study() -> optuna.Study:
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))


def test_most_sampled_candidates_fit_the_budget():
    study, fits = make_study(), 0
    for _ in range(300):
        trial = study.ask()
        try:
            fits += suggest(trial, 20).spec.num_params() < 20_000
        except ValueError:
            pass
        study.tell(trial, state=TrialState.PRUNED)
    assert fits / 300 > 0.6


def test_gate_rejects_over_budget_without_training(mnist, monkeypatch, tmp_path):
    monkeypatch.setattr(objective_mod, "train", lambda *a, **k: pytest.fail("an over-budget candidate was trained"))
    study = make_study()
    study.enqueue_trial(BIG)
    start = time.perf_counter()
    study.optimize(Objective(mnist, Budget(), FileSystemArtifactStore(str(tmp_path))), n_trials=1)
    assert time.perf_counter() - start < 1.0
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and status(trial) == "rejected"
    assert trial.user_attrs["params"] >= 20_000 and f"{trial.user_attrs['params']:,} params" in trial.user_attrs["reason"]
    assert trial.constraints["over_budget"] == trial.user_attrs["params"] - 20_000 + 1  # the sampler sees how far over


def test_diverged_candidate_is_recorded_and_the_search_goes_on(mnist, tmp_path):
    study = make_study()
    study.enqueue_trial({**SMALL_NET, "optimizer": "sgd", "sgd_lr": 1e30, "schedule": "none", "weight_decay": 1e-6})
    study.enqueue_trial({**SMALL_NET, "optimizer": "sgd", "sgd_lr": 0.05, "schedule": "onecycle"})
    with pytest.warns(UserWarning, match="out of range"):  # the forcing learning rate is outside the space on purpose
        study.optimize(Objective(mnist, Budget(max_epochs=1), FileSystemArtifactStore(str(tmp_path))), n_trials=2)
    diverged, ok = study.trials
    assert status(diverged) == "diverged" and diverged.state == TrialState.PRUNED and "NaN/inf" in diverged.user_attrs["reason"]
    assert status(ok) == "complete" and ok.value is not None


def test_objective_scores_and_prunes_on_validation_only(mnist, tmp_path):
    study = make_study()
    study.enqueue_trial({**SMALL_NET, "optimizer": "sgd", "sgd_lr": 0.05, "schedule": "onecycle"})
    study.optimize(Objective(mnist, Budget(max_epochs=2), FileSystemArtifactStore(str(tmp_path))), n_trials=1)
    t = study.trials[0]
    history = t.user_attrs["history"]
    assert t.intermediate_values == {h["epoch"]: h["val_acc"] for h in history}  # the pruner sees validation accuracy
    assert t.value == pytest.approx(sum(h["val_acc"] for h in history) / 2)  # mean of the last (up to 3) epochs
    assert t.value != t.user_attrs["test_acc"]
    assert t.user_attrs["weights"] and t.user_attrs["seconds"] > 0 and t.user_attrs["epochs"] == 2


def test_selection_never_reads_test_accuracy():
    study = make_study()
    for value, test in [(0.991, 0.999), (0.995, 0.980), (0.993, 0.997)]:
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=value, user_attrs={"test_acc": test, "status": "complete"}))
    assert best_trial(study).value == 0.995  # the best validation score wins, whatever its test accuracy


def _states(db) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("select number, state from trials order by number").fetchall()


def test_search_runs_end_to_end_and_resumes(study_copy):
    db = study_copy / "studies" / "nas20k.db"
    first = _states(db)
    r = nas20k("search", "--trials", "5", *SMALL, cwd=study_copy)
    assert r.returncode == 0, r.stderr
    assert "next: nas20k best --export" in r.stdout and "nas20k report" in r.stdout and "nas20k dashboard" in r.stdout
    after = _states(db)
    assert after[: len(first)] == first  # the same study, continued
    study = optuna.load_study(study_name="nas20k", storage=f"sqlite:///{db}")
    assert sum(status(t) in ("complete", "pruned", "diverged") for t in study.trials) == 5
    assert all(t.state != TrialState.RUNNING for t in study.trials)
    r = nas20k("search", "--trials", "5", *SMALL, cwd=study_copy)  # already there: nothing more is trained
    assert r.returncode == 0 and _states(db) == after


def test_best_shows_checklist_and_export_round_trips(study_copy, data_dir):
    r = nas20k("best", "--export", "out", cwd=study_copy)
    assert r.returncode == 0, r.stderr
    for line in ("BatchNorm used", "Dropout used", "GAP or FC head", "test accuracy >= 99.4%", "epochs <= 1"):
        assert line in r.stdout
    out = study_copy / "out"
    assert {p.name for p in out.iterdir()} >= {"model.pt2", "model.pt", "spec.json", "metrics.json", "summary.txt", "history.csv"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"params", "epochs", "val_acc", "test_acc", "mean", "std", "trial", "study"} <= set(metrics)
    # plain torch, no nas20k: the exported program reproduces the recorded test accuracy on the same images
    model = torch.export.load(str(out / "model.pt2")).module()
    test = load_mnist(data_dir, val_size=500, limit=1500, download=False).test
    raw = test.x * 0.3081 + 0.1307  # undo nas20k's normalization, then apply the one metrics.json states
    x = (raw - metrics["mean"]) / metrics["std"]
    with torch.no_grad():
        acc = (model(x).argmax(1) == test.y).float().mean().item()
        assert model(x[:1]).shape == (1, 10) and model(x[:7]).shape == (7, 10)  # dynamic batch
    assert acc == pytest.approx(metrics["test_acc"], abs=1e-6)
    state = torch.load(out / "model.pt", weights_only=True)
    assert sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) == metrics["params"]


def test_best_default_export_dir(study_copy):
    r = nas20k("best", "--export", cwd=study_copy)
    assert r.returncode == 0, r.stderr
    assert (study_copy / "studies" / "best" / "model.pt2").is_file()


def test_two_local_workers_share_one_sqlite_study(tmp_path):
    r = nas20k("search", "--trials", "4", "--jobs", "2", *SMALL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="nas20k", storage=f"sqlite:///{tmp_path}/studies/nas20k.db")
    trained = [t for t in study.trials if status(t) in ("complete", "pruned", "diverged")]
    assert 4 <= len(trained) <= 5  # a worker busy when the target is reached may add one more
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2
