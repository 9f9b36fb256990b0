"""Every command explains itself; every bad input is one readable line, a non-zero exit, and an untouched study."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from nas20k.cli import app
from nas20k.study import status

from conftest import DATA_DIR, SMALL, nas20k

COMMANDS = ["train", "search", "best", "trials", "report", "dashboard"]


def test_help_explains_every_command_and_option():
    runner = CliRunner()
    r = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for command in COMMANDS:
        assert command in r.stdout
        sub = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert sub.exit_code == 0, sub.output
        options = [line.split()[1] for line in sub.stdout.splitlines() if line.strip("│ ").startswith("--")]
        assert options, sub.stdout
        for line in sub.stdout.splitlines():  # every option line carries a help text, not just its name and type
            words = line.strip("│ ").split()
            if words and words[0].startswith("--") and words[0] != "--help":
                assert len(words) > 3, f"{command}: option without help: {line}"


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


def spec_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "spec.json"
    path.write_text(text)
    return str(path)


CASES = {
    "trials-zero": (lambda tmp: ["search", "--trials", "0"], "--trials must be >= 1"),
    "trials-negative": (lambda tmp: ["search", "--trials", "-3"], "--trials must be >= 1"),
    "max-params-zero": (lambda tmp: ["search", "--max-params", "0"], "--max-params must be >= 1"),
    "max-epochs-zero": (lambda tmp: ["search", "--max-epochs", "0"], "--max-epochs must be between 1 and 1000"),
    "max-epochs-huge": (lambda tmp: ["search", "--max-epochs", "1001"], "--max-epochs must be between 1 and 1000"),
    "unknown-pruner": (lambda tmp: ["search", "--pruner", "magic"], "--pruner must be one of"),
    "unknown-preset": (lambda tmp: ["train", "--preset", "resnet"], "unknown preset 'resnet'"),
    "malformed-spec": (lambda tmp: ["train", "--spec", spec_file(tmp, '{"blocks": [[8]')], "spec is not valid JSON"),
    "missing-spec": (lambda tmp: ["train", "--spec", str(tmp / "nope.json")], "spec file not found"),
    "spec-too-deep": (lambda tmp: ["train", "--spec", spec_file(tmp, json.dumps({"blocks": [[8] * 14], "transitions": []}))], "does not fit a 28x28 image"),
    "unreachable-storage": (lambda tmp: ["search", "--storage", "postgresql://nobody:secret@127.0.0.1:9/none"], "cannot open storage postgresql://nobody:***@127.0.0.1:9/none"),
    "malformed-storage": (lambda tmp: ["search", "--storage", "not a url"], "malformed storage URL"),
    "missing-mnist-file": (lambda tmp: ["search", "--no-download", "--data-dir", str(broken_data_dir(tmp, "train-labels-idx1-ubyte", False))], "MNIST file missing"),
    "corrupt-mnist-file": (lambda tmp: ["search", "--data-dir", str(broken_data_dir(tmp, "t10k-images-idx3-ubyte", True))], "corrupt (md5 mismatch)"),
    "export-into-a-file": (lambda tmp: ["best", "--export", str(tmp / "studies" / "nas20k.db")], "it is a file"),
    "best-unknown-study": (lambda tmp: ["best", "--study-name", "nope"], "no study database at studies/nope.db"),
    "best-unknown-name": (lambda tmp: ["best", "--study-name", "nope", "--storage", "sqlite:///studies/nas20k.db"], "no study named 'nope'"),
    "trials-bad-sort": (lambda tmp: ["trials", "--sort", "colour"], "--sort must be one of"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_loses_nothing(case, study_copy):
    args, message = CASES[case]
    before = digest(study_copy / "studies")
    r = nas20k(*args(study_copy), cwd=study_copy)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert digest(study_copy / "studies") == before


def test_best_on_a_study_without_a_completed_trial(tmp_path):
    (tmp_path / "studies").mkdir()
    storage = f"sqlite:///{tmp_path}/studies/nas20k.db"
    study = optuna.create_study(study_name="nas20k", storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, value=0.5, user_attrs={"status": "pruned"}))
    del study
    before = digest(tmp_path / "studies")
    r = nas20k("best", cwd=tmp_path)
    assert r.returncode != 0 and "has no completed trial yet" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert digest(tmp_path / "studies") == before


def test_trials_lists_and_writes_csv(study_copy):
    r = nas20k("trials", "--csv", "all.csv", "--top", "2", cwd=study_copy)
    assert r.returncode == 0, r.stderr
    import pandas as pd

    frame = pd.read_csv(study_copy / "all.csv")
    study = optuna.load_study(study_name="nas20k", storage=f"sqlite:///{study_copy}/studies/nas20k.db")
    assert len(frame) == len(study.trials) and sorted(frame.trial) == [t.number for t in study.trials]
    for col in ["trial", "status", "params", "epochs", "val_score", "test_acc", "seconds", "blocks", "head", "dropout", "optimizer", "lr", "batch_size", "schedule"]:
        assert col in frame.columns
    complete = frame[frame.status == "complete"]
    assert complete.test_acc.notna().all() and frame[frame.status != "complete"].test_acc.isna().all()
    r = nas20k("trials", "--state", "rejected", cwd=study_copy)
    assert r.returncode == 0 and "complete" not in r.stdout.split("┡")[-1]


def test_dashboard_serves_the_study(study_copy):
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "nas20k", "dashboard", "--port", str(port)], cwd=study_copy, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
    r = nas20k("report", "--out", "r/report.html", cwd=study_copy)
    assert r.returncode == 0, r.stderr
    html = (study_copy / "r" / "report.html").read_text()
    for title in ["Optimization history", "Accuracy vs parameters", "Learning curves", "Hyper-parameter importances", "Parallel coordinates"]:
        assert title in html
    study = optuna.load_study(study_name="nas20k", storage=f"sqlite:///{study_copy}/studies/nas20k.db")
    for s in ("complete", "pruned", "rejected"):
        assert f"<td>{s}</td><td>{sum(status(t) == s for t in study.trials)}</td>" in html
    assert "<script src=" not in html


def test_train_reports_per_epoch_and_test_accuracy_with_a_recipe(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"train": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 0.005, "schedule": "step"}}))
    r = nas20k("train", "--preset", "small", "--recipe", str(tmp_path / "metrics.json"), "--limit", "600", "--val-size", "200", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Total params: 9,858" in r.stdout and '"optimizer": "adam"' in r.stdout
    assert "epoch   1/1" in r.stdout and "test " in r.stdout.splitlines()[-1]
