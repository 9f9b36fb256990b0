"""Every command explains itself; every bad input is one readable line, a non-zero exit, and an untouched study;
a bug is not dressed up as bad input. In-process (typer's CliRunner) unless a real process is the point."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import DATA_DIR, SMALL, cli, load, nas20k, status
from optuna.trial import TrialState
from typer.testing import CliRunner

import nas20k.runner.objective as objective_mod
from nas20k.cli import app

COMMANDS = ["train", "search", "confirm", "best", "trials", "report", "dashboard"]


def test_help_explains_every_command_and_option():
    runner = CliRunner()
    r = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    listed = [line.strip("│ ").split()[0] for line in r.stdout.splitlines() if line.strip("│ ")]
    for command in COMMANDS:
        assert command in listed, r.stdout
        sub = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert sub.exit_code == 0, sub.output
        options = [line.split()[1] for line in sub.stdout.splitlines() if line.strip("│ ").startswith("--")]
        assert options, sub.stdout
        for line in sub.stdout.splitlines():  # every option line carries a help text, not just its name and type
            words = line.strip("│ ").split()
            if words and words[0].startswith("--") and words[0] != "--help":
                assert len(words) > 3, f"{command}: option without help: {line}"
    confirm = runner.invoke(app, ["confirm", "--help"], env={"COLUMNS": "200"}).stdout
    assert "--top" in confirm and "--seeds" in confirm
    assert confirm.count("[default: the study's]") == 3  # --val-size, --limit, --split-seed
    search = runner.invoke(app, ["search", "--help"], env={"COLUMNS": "200"}).stdout
    for option in ("--goal", "--target", "--warm-start", "--no-warm-start", "--confirm-top", "--confirm-seeds",
                   "--jobs", "--device"):
        assert option in search
    assert "[default: 3; 5 for --goal smallest]" in search


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
    return h.hexdigest()


def broken_data_dir(tmp_path: Path, name: str, corrupt: bool) -> Path:
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (DATA_DIR / "MNIST" / "raw").iterdir():
        if f.name != name:
            os.symlink(f, raw / f.name)
    if corrupt:
        good = (DATA_DIR / "MNIST" / "raw" / name).read_bytes()
        (raw / name).write_bytes(good[:5000] + bytes(b ^ 0xFF for b in good[5000:5008]) + good[5008:])
    return tmp_path / "data"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


CASES = {
    "trials-zero": (lambda tmp: ["search", "--trials", "0"], "--trials must be >= 1"),
    "trials-negative": (lambda tmp: ["search", "--trials", "-3"], "--trials must be >= 1"),
    "max-params-zero": (lambda tmp: ["search", "--max-params", "0"], "--max-params must be >= 1"),
    "max-epochs-zero": (lambda tmp: ["search", "--max-epochs", "0"], "--max-epochs must be between 1 and 1000"),
    "max-epochs-huge": (lambda tmp: ["search", "--max-epochs", "1001"], "--max-epochs must be between 1 and 1000"),
    "unknown-pruner": (lambda tmp: ["search", "--pruner", "magic"], "--pruner must be one of"),
    "unknown-goal": (lambda tmp: ["search", "--goal", "fastest"], "--goal must be one of accuracy, smallest"),
    "target-percent": (lambda tmp: ["search", "--goal", "smallest", "--target", "99.4"],
                       "--target must be a val accuracy between 0 and 1"),
    "confirm-seeds-zero": (lambda tmp: ["search", "--confirm-seeds", "0"], "--confirm-seeds >= 1"),
    "jobs-zero": (lambda tmp: ["search", "--jobs", "0"], "--jobs must be >= 1"),
    "search-limit-zero": (lambda tmp: ["search", "--limit", "0"], "--limit must be at least 1 image"),
    "unknown-device": (lambda tmp: ["search", "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
    "search-other-budget": (lambda tmp: ["search", "--max-params", "8000", *SMALL], "was searched with budget"),
    "search-other-split": (lambda tmp: ["search", "--limit", "1500", "--val-size", "600", "--max-epochs", "1"],
                           "was searched with data {'val_size': 500, 'limit': 1500, 'split_seed': 0}"),
    "confirm-other-split": (lambda tmp: ["confirm", "--limit", "3000", "--val-size", "500"],
                            "was searched with data {'val_size': 500, 'limit': 1500, 'split_seed': 0}"),
    "unknown-preset": (lambda tmp: ["train", "--preset", "resnet"], "unknown preset 'resnet'"),
    "preset-and-spec": (lambda tmp: ["train", "--preset", "seed", "--spec", "x.json"],
                        "give exactly one of --preset NAME or --spec FILE"),
    "malformed-spec": (lambda tmp: ["train", "--spec", write(tmp, "spec.json", '{"blocks": [[8]')],
                       "spec is not valid JSON"),
    "missing-spec": (lambda tmp: ["train", "--spec", str(tmp / "nope.json")], "spec file not found"),
    "spec-too-deep": (lambda tmp: ["train", "--spec",
                                   write(tmp, "spec.json", json.dumps({"blocks": [[8] * 14], "transitions": []}))],
                      "does not fit a 28x28 image"),
    "spec-direct-width": (lambda tmp: ["train", "--spec", write(tmp, "spec.json", json.dumps(
                              {"blocks": [[8, 12]], "transitions": [], "head": "direct"}))],
                          "head 'direct'"),
    "train-batch-too-big": (lambda tmp: ["train", "--preset", "seed", "--limit", "100", "--batch-size", "1000", "-q"],
                            "--batch-size 1000 is larger than the 100 training images"),
    "train-limit-zero": (lambda tmp: ["train", "--preset", "seed", "--limit", "0"], "--limit must be at least 1 image"),
    "train-unknown-optimizer": (lambda tmp: ["train", "--preset", "seed", "--optimizer", "lion"],
                                "optimizer must be one of sgd, adam, adamw"),
    "recipe-unknown-key": (lambda tmp: ["train", "--preset", "seed", "--recipe",
                                        write(tmp, "r.json", '{"learning_rate": 0.1}')],
                           "unknown recipe field(s): learning_rate"),
    "recipe-missing": (lambda tmp: ["train", "--preset", "seed", "--recipe", str(tmp / "nope.json")],
                       "recipe file not found"),
    "unreachable-storage": (lambda tmp: ["search", "--storage", "postgresql://nobody:secret@127.0.0.1:9/none"],
                            "cannot open storage postgresql://nobody:***@127.0.0.1:9/none"),
    "malformed-storage": (lambda tmp: ["search", "--storage", "not a url"], "malformed storage URL"),
    "missing-mnist-file": (lambda tmp: ["search", "--no-download", "--data-dir",
                                        str(broken_data_dir(tmp, "train-labels-idx1-ubyte", False))],
                           "MNIST file missing"),
    "corrupt-mnist-file": (lambda tmp: ["search", "--data-dir",
                                        str(broken_data_dir(tmp, "t10k-images-idx3-ubyte", True))],
                           "corrupt (md5 mismatch)"),
    "train-missing-mnist": (lambda tmp: ["train", "--preset", "seed", "--no-download", "--data-dir",
                                         str(tmp / "empty")],
                            "MNIST file missing"),
    "confirm-top-zero": (lambda tmp: ["confirm", "--top", "0"], "--top and --seeds must be >= 1"),
    "confirm-unknown-study": (lambda tmp: ["confirm", "--study-name", "nope"], "no study database at studies/nope.db"),
    "export-into-a-file": (lambda tmp: ["best", "--export", str(tmp / "studies" / "nas20k.db")], "it is a file"),
    "dir-without-export": (lambda tmp: ["best", "somewhere"], "is an export folder: add --export"),
    "best-unknown-study": (lambda tmp: ["best", "--study-name", "nope"], "no study database at studies/nope.db"),
    "best-unknown-name": (lambda tmp: ["best", "--study-name", "nope", "--storage", "sqlite:///studies/nas20k.db"],
                          "no study named 'nope'"),
    "best-smallest-unconfirmed": (lambda tmp: ["best", "--smallest", "--target", "0.1", "--export"],
                                  "(>= 2 seeds); run `nas20k confirm`"),
    "trials-bad-sort": (lambda tmp: ["trials", "--sort", "colour"], "--sort must be one of"),
    "report-into-a-folder": (lambda tmp: ["report", "--out", "studies"], "--out must be a file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_loses_nothing(case, study_copy):
    args, message = CASES[case]
    before = digest(study_copy / "studies")
    r = cli(*args(study_copy), cwd=study_copy)
    assert r.exit_code == 1, r.output
    assert message in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.output and not isinstance(r.exception, Exception)
    assert digest(study_copy / "studies") == before


@pytest.mark.slow
@pytest.mark.parametrize("case", ["corrupt-mnist-file", "unreachable-storage"])
def test_bad_input_in_a_real_process(case, study_copy):
    """The same, as a user runs it: exit status 1 and one line on stderr."""
    args, message = CASES[case]
    r = nas20k(*args(study_copy), cwd=study_copy)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("args, message", [
    (["search", "--trials", "many"], "Invalid value for '--trials'"),
    (["search", "--colour", "red"], "No such option: --colour"),
    (["train", "--epochs"], "Option '--epochs' requires an argument"),
    (["frobnicate"], "No such command 'frobnicate'"),
])
def test_unparsable_flags_are_usage_errors(args, message, tmp_path):
    r = cli(*args, cwd=tmp_path)
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert "Traceback" not in r.output and not list(tmp_path.iterdir())  # nothing created


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """An exception that is not a UserError is a bug: no `error:` line, the exception itself surfaces."""
    def boom(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("boom: a bug, not bad input")

    monkeypatch.setattr(objective_mod, "train", boom)  # inside the search's worker (in this process: --jobs 1)
    r = cli("search", "--trials", "1", *SMALL, "--jobs", "1", "--no-warm-start", "--confirm-top", "0", "-q",
            cwd=tmp_path)
    assert isinstance(r.exception, RuntimeError) and "boom" in str(r.exception), r.output
    assert "error:" not in r.stderr
    assert [status(t) for t in load(tmp_path).trials if status(t) != "rejected"] == ["failed"]  # the trial says so too


@pytest.mark.slow
def test_a_bug_keeps_its_traceback_in_a_real_process(small_study):
    code = ("import sys, nas20k.cli as c, nas20k.runner.storage as s\n"
            "def boom(*a, **k): raise RuntimeError('boom: a bug, not bad input')\n"
            "s.load_study = boom\nsys.argv = ['nas20k', 'best']\nc.main()\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=small_study, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "NAS20K_DATA_DIR": str(DATA_DIR)})
    assert r.returncode != 0
    assert "Traceback (most recent call last)" in r.stderr and "RuntimeError: boom: a bug, not bad input" in r.stderr
    assert not any(line.startswith("error:") for line in r.stderr.splitlines())


def test_best_on_a_study_without_a_completed_trial(tmp_path):
    (tmp_path / "studies").mkdir()
    storage = f"sqlite:///{tmp_path}/studies/nas20k.db"
    study = optuna.create_study(study_name="nas20k", storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, value=0.5, user_attrs={"status": "pruned"}))
    del study
    before = digest(tmp_path / "studies")
    r = cli("best", cwd=tmp_path)
    assert r.exit_code == 1 and "has no completed trial yet" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert digest(tmp_path / "studies") == before


def test_a_finished_study_says_so_and_trains_nothing(study_copy):
    before = digest(study_copy / "studies" / "nas20k-artifacts"), [(t.number, t.state) for t in load(study_copy).trials]
    r = cli("search", "--trials", "3", *SMALL, "--jobs", "1", "--confirm-top", "0", "-q", cwd=study_copy)
    assert r.exit_code == 0, r.output
    said = [line for line in r.stdout.splitlines() if "already holds" in line]
    assert len(said) == 1, r.stdout
    assert "already holds 3 trained candidates (>= --trials 3)" in said[0]
    assert "extend it with --trials 53" in said[0] and "start anew with --study-name NAME" in said[0]
    assert (digest(study_copy / "studies" / "nas20k-artifacts"),
            [(t.number, t.state) for t in load(study_copy).trials]) == before


def test_weights_land_next_to_the_database(tmp_path):
    """--storage sqlite:////abs/k.db: weights go to k-artifacts beside k.db, nothing to ./studies."""
    db_dir, work = tmp_path / "db", tmp_path / "work"
    db_dir.mkdir()
    work.mkdir()
    url = f"sqlite:///{db_dir}/k.db"
    assert url.startswith("sqlite:////")
    r = cli("search", "--storage", url, "--study-name", "k", "--trials", "1", *SMALL, "--jobs", "1", "--no-warm-start",
            "--confirm-top", "0", "-q", cwd=work)
    assert r.exit_code == 0, r.output
    assert not (work / "studies").exists() and not list(work.iterdir())
    assert sorted(p.name for p in db_dir.iterdir()) == ["k-artifacts", "k.db"]
    study = optuna.load_study(study_name="k", storage=url)
    weights = [t.user_attrs["weights"] for t in study.trials if status(t) == "complete"]
    assert weights and all((db_dir / "k-artifacts" / w).is_file() for w in weights)
    r = cli("best", "--storage", url, "--study-name", "k", "--export", "out", cwd=work)  # found there by default
    assert r.exit_code == 0, r.output
    assert (work / "out" / "model.pt2").is_file()


def test_trials_lists_and_writes_csv(study_copy):
    r = cli("trials", "--csv", "all.csv", "--top", "2", cwd=study_copy)
    assert r.exit_code == 0, r.output
    frame = pd.read_csv(study_copy / "all.csv")
    study = load(study_copy)
    assert len(frame) == len(study.trials) and sorted(frame.trial) == [t.number for t in study.trials]
    for col in ["trial", "status", "params", "epochs", "val_score", "seeds", "mean_val", "test_acc", "seconds",
                "blocks", "head", "optimizer", "lr", "schedule", "warm_start"]:
        assert col in frame.columns
    complete = frame[frame.status == "complete"]
    assert complete.test_acc.notna().all() and frame[frame.status != "complete"].test_acc.isna().all()
    assert "nas20k-16424" in set(complete.warm_start.dropna())  # the first trials are the warm start
    r = cli("trials", "--state", "complete", cwd=study_copy)
    assert r.exit_code == 0 and "rejected" not in r.stdout.split("┡")[-1]


@pytest.mark.slow
def test_dashboard_serves_the_study(study_copy):
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "nas20k", "dashboard", "--port", str(port)], cwd=study_copy,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                body = urllib.request.urlopen(f"http://localhost:{port}/api/studies", timeout=2).read().decode()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.communicate()
                time.sleep(0.5)
        assert '"study_name": "nas20k"' in body
    finally:
        proc.terminate()
        proc.wait(10)


def test_report_command_writes_the_study_page(study_copy):
    r = cli("report", "--out", "r/report.html", cwd=study_copy)
    assert r.exit_code == 0, r.output
    html = (study_copy / "r" / "report.html").read_text()
    assert "nas20k" in html and "<script src=" not in html  # the study's page, offline (contents: tests/test_report.py)


def test_train_reports_per_epoch_and_test_accuracy_with_a_recipe(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"train": {"epochs": 1, "batch_size": 64, "optimizer": "adam",
                                                                 "lr": 0.005, "schedule": "step"}}))
    r = cli("train", "--preset", "firekind-6174", "--recipe", str(tmp_path / "metrics.json"), "--limit", "600",
            "--val-size", "200", "-q", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "Total params: 6,174" in r.stdout and '"optimizer": "adam"' in r.stdout
    assert '"recalibrate_bn": false' in r.stdout  # a recipe without the key predates recalibration
    assert "epoch   1/1" in r.stdout and "test " in r.stdout.splitlines()[-1]


@pytest.mark.parametrize("flag, recorded", [(None, "true"), ("--no-recalibrate-bn", "false")])
def test_train_recalibrates_batchnorm_unless_told_not_to(tmp_path, flag, recorded):
    r = cli("train", "--preset", "small", "--epochs", "1", "--limit", "300", "--val-size", "100", "-q",
            *([flag] if flag else []), cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert f'"recalibrate_bn": {recorded}' in r.stdout


@pytest.mark.slow
def test_what_the_cli_prints_fits_80_columns(study_copy):
    """A terminal of 80 columns: search (with its confirmation), trials and best print no line wider (`trials
    --wide` may); the spec and recipe JSON lines are the exception, kept whole to be copied."""
    for args in (["search", "--trials", "4", *SMALL, "--jobs", "1", "--confirm-top", "1", "--confirm-seeds", "2"],
                 ["trials"], ["best"], ["confirm", "--top", "2", "--seeds", "2", *SMALL[:4], "--jobs", "1"]):
        r = cli(*args, cwd=study_copy, columns=80)
        assert r.exit_code == 0, r.output
        wide = [line for line in r.stdout.splitlines() if len(line) > 80 and not line.startswith(("spec:", "train:"))]
        assert not wide, (args, wide)
    r = cli("trials", "--wide", cwd=study_copy, columns=80)
    assert r.exit_code == 0 and "optimizer" in r.stdout and "warm start" in r.stdout
