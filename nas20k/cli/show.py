"""The commands that read a study: best (and its export), trials, report, dashboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from nas20k.base.errors import UserError
from nas20k.cli.app import MARK, app, open_study, out
from nas20k.cli.options import STUDY_OPTIONS, add_options
from nas20k.core.factory import summary
from nas20k.readers.tables import pct, table


@app.command()
@add_options(STUDY_OPTIONS, into="where")
def best(
    directory: Annotated[Path | None, typer.Argument(
        metavar="[DIR]", show_default=False,
        help="Export folder  \\[default: studies/<study-name>-best, or -smallest]")] = None,
    export_model: Annotated[bool, typer.Option(
        "--export", help="Write model.pt2 (torch.export), model.pt, spec.json, metrics.json, summary.txt, history.csv "
                         "into DIR.")] = False,
    force: Annotated[bool, typer.Option(
        help="Let --export replace files in DIR that this study did not write.")] = False,
    smallest: Annotated[bool, typer.Option(
        help="The fewest-parameter candidate whose confirmed mean val score reaches --target.")] = False,
    target: Annotated[float | None, typer.Option(
        help="Val score for --smallest  \\[default: the study's --target]", show_default=False)] = None,
    artifacts: Annotated[Path | None, typer.Option(
        help="Where the study's weights are  \\[default: next to its SQLite file]", show_default=False)] = None,
    where: dict | None = None,
) -> None:
    """Show the best trial (by mean val score over its seeds), its layer table and the checklist; optionally export it."""  # noqa: E501 - one line in `nas20k --help`
    from nas20k.readers.record import StudyMeta, search_records
    from nas20k.readers.results import best_record, record_checklist, smallest_record
    from nas20k.runner.settings import runtime_line
    from nas20k.runner.storage import default_artifacts, default_storage, redact

    name, url = where["study_name"], where["storage"] or default_storage(where["study_name"])
    if directory is not None and not export_model:
        raise UserError(f"{directory} is an export folder: add --export")
    study = open_study(name, where["storage"])
    meta, recs = StudyMeta.of(study), search_records(study)
    r = smallest_record(recs, meta, name, target or meta.goal.target) if smallest else best_record(recs, meta, name)
    sd = "" if r.sd_val() is None else f" ± {r.sd_val():.2%}"
    out.print(f"{'smallest passing' if smallest else 'best'} trial #{r.number} of {name!r}: {r.params:,} params, "
              f"{r.epochs} epochs")
    out.print(f"mean val score {pct(r.mean_val())}{sd} over {max(r.n_seeds, 1)} seed(s); "
              f"test (mean of last 3 epochs) {pct(r.mean_test_last3())}")
    if r.n_seeds < 2:
        out.print("unconfirmed: one seed; run `nas20k confirm` for a mean over seeds")
    for s in r.seeds:
        out.print(f"  seed {s.seed}: val score {pct(s.val_score)}, test last 3 {pct(s.test_acc_last3)} ({s.source})")
    out.print(f"spec:  {json.dumps(r.candidate.spec.to_dict())}", soft_wrap=True)
    out.print(f"train: {json.dumps(r.candidate.train.to_dict())}", soft_wrap=True)
    for run in meta.runtime:
        out.print(f"ran on: {runtime_line(run)}")
    out.print(summary(r.candidate.spec))
    for line, ok in record_checklist(r, meta):
        out.print(f"  {MARK[ok]} {line}")
    if export_model:
        from nas20k.readers.export import export

        folder = directory or Path("studies") / f"{name.replace(':', '-')}-{'smallest' if smallest else 'best'}"
        files = export(name, redact(url), r, meta, artifacts or default_artifacts(url, name), folder, force)
        out.print(f"exported to {folder}: {', '.join(f.name for f in files)}")


@app.command("trials")
@add_options(STUDY_OPTIONS, into="where")
def trials_cmd(
    top: Annotated[int | None, typer.Option(help="Show only the first K rows.", show_default=False)] = None,
    sort: Annotated[str, typer.Option(
        help="Column to sort by (descending for scores), e.g. mean_val, params, trial, seconds.")] = "mean_val",
    state: Annotated[str | None, typer.Option(
        help="Only trials in this status: complete, pruned, rejected, diverged, interrupted, failed, running.",
        show_default=False)] = None,
    wide: Annotated[bool, typer.Option(help="All columns (wider than 80 characters).")] = False,
    csv: Annotated[Path | None, typer.Option(help="Write all rows and columns to this CSV file.",
                                             show_default=False)] = None,
    where: dict | None = None,
) -> None:
    """List the study's trials: status, params, epochs, val scores over seeds, test, main hyper-parameters."""
    from nas20k.readers.record import search_records
    from nas20k.readers.results import trials_frame

    frame = trials_frame(search_records(open_study(where["study_name"], where["storage"])))
    if sort not in frame.columns:
        raise UserError(f"--sort must be one of {', '.join(frame.columns)}, got {sort!r}")
    if state:
        frame = frame[frame.status == state]
    descending = ("val_score", "mean_val", "last_val", "test_acc", "test_last3", "seeds")
    frame = frame.sort_values(sort, ascending=sort not in descending, na_position="last")
    if csv:
        frame.to_csv(csv, index=False)
        out.print(f"wrote {len(frame)} rows to {csv}")
    # --wide: as wide as it takes
    (Console(highlight=False, width=10_000) if wide else out).print(table(frame.head(top or len(frame)), wide))


@app.command()
@add_options(STUDY_OPTIONS, into="where")
def report(
    out_file: Annotated[Path, typer.Option(
        "--out", help="HTML file to write (self-contained: opens offline).")] = Path("studies/report.html"),
    where: dict | None = None,
) -> None:
    """Write one HTML page: summary, best trial and recipe, history, accuracy vs params, curves, importances, trials."""
    if out_file.is_dir():
        raise UserError(f"--out must be a file, but {out_file} is a folder")
    from nas20k.readers.report import write_report

    path = write_report(open_study(where["study_name"], where["storage"]), out_file)
    out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")


@app.command()
@add_options(STUDY_OPTIONS, into="where")
def dashboard(
    host: Annotated[str, typer.Option(help="Interface to listen on (localhost: this machine only).")] = "localhost",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    artifacts: Annotated[Path | None, typer.Option(help="Where the study's weights are.", show_default=False)] = None,
    where: dict | None = None,
) -> None:
    """Browse the study in optuna-dashboard: trials, learning curves, importances, saved weights."""
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    from nas20k.base.optuna_private import storage_of
    from nas20k.runner.storage import default_artifacts, default_storage

    name, url = where["study_name"], where["storage"] or default_storage(where["study_name"])
    study = open_study(name, where["storage"])
    out.print(f"optuna-dashboard on http://{host}:{port} (Ctrl-C to stop)")
    run_server(storage_of(study), host=host, port=port,
               artifact_store=FileSystemArtifactStore(str(artifacts or default_artifacts(url, name))))


