"""`nas20k zoo`: the known designs the warm start queues, and `nas20k zoo add`, which puts a study's confirmed
winner into the user's own zoo with its evidence."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from nas20k.base.mission import GOALS
from nas20k.cli.app import app, open_study, out
from nas20k.cli.options import STUDY_OPTIONS, add_options
from nas20k.core import zoo
from nas20k.readers.tables import pct

zoo_app = typer.Typer(help="The known designs a new study starts from (packaged, and your own).",
                      invoke_without_command=True, no_args_is_help=False)
app.add_typer(zoo_app, name="zoo")


@zoo_app.callback()
def show(ctx: typer.Context,
         wide: Annotated[bool, typer.Option(help="Also the evidence's study, trial and date.")] = False) -> None:
    """List the zoo in the warm start's order (the first that fits a budget leads a new study): params, the budget
    and split its figures come from, val mean ± sd over n seeds, test (reported only)."""
    if ctx.invoked_subcommand is not None:
        return
    mine = zoo.user_zoo()
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("design", "params", "budget", "n", "val", "test", "split", *(("evidence",) if wide else ())):
        table.add_column(column, justify="left" if column in ("design", "evidence") else "right", no_wrap=True)
    for e in zoo.entries(mine):
        ev = e.evidence
        row = [e.name, f"{e.spec.num_params():,}"]
        if ev is None:
            row += ["-", "-", "-", "-", "-"] + (["public: " + e.source.split(" ")[0]] if wide else [])
        else:
            row += [f"{ev.budget[0] / 1000:g}k/{ev.budget[1]}", str(ev.seeds), pct(ev.val_mean, ev.val_sd),
                    pct(ev.test_mean), str(ev.split_seed)]
            row += [f"{ev.study_name}#{ev.trial} {ev.date}"] if wide else []
        table.add_row(*row)
    out.print(table)
    out.print(f"packaged: {zoo.PACKAGED} (read-only); yours: {mine}"
              f"{'' if mine.exists() else ' (none yet: `nas20k zoo add`)'}", soft_wrap=True)


@zoo_app.command("add")
@add_options(STUDY_OPTIONS, into="where")
def add(
    name: Annotated[str | None, typer.Option(help="The design's name in the zoo  \\[default: <study-name>-<trial>]",
                                             show_default=False)] = None,
    smallest: Annotated[bool, typer.Option(
        help="Add the study's smallest confirmed pass of its --target instead of its best by mean val.")] = False,
    follows: Annotated[list[str] | None, typer.Option(
        help=f"A goal ({' | '.join(GOALS)}) for which it follows the lead into new studies (repeatable).",
        show_default=False)] = None,
    where: dict | None = None,
) -> None:
    """Add the study's confirmed winner (2 or more seeds), with its evidence, to your zoo: later searches
    warm-start from it. The packaged zoo stays as it is."""
    from nas20k.readers.record import StudyMeta, search_records
    from nas20k.readers.results import best_record, smallest_record, zoo_entry
    from nas20k.runner.storage import default_storage, redact

    study_name = where["study_name"]
    study = open_study(study_name, where["storage"])
    meta, recs = StudyMeta.of(study), search_records(study)
    r = smallest_record(recs, meta, study_name, meta.goal.target) if smallest else best_record(recs, meta, study_name)
    if bad := set(follows or ()) - set(GOALS):
        raise zoo.ZooError(f"--follows must be one of {', '.join(GOALS)}, got {', '.join(sorted(bad))}")
    where_url = redact(where["storage"] or default_storage(study_name))
    entry = zoo_entry(r, meta, study_name, where_url, name or f"{study_name}-{r.number}", tuple(follows or ()))
    path = zoo.add(entry)
    ev = entry.evidence
    out.print(f"added {entry.name} to {path}: {entry.spec.num_params():,} params, mean val "
              f"{pct(ev.val_mean, ev.val_sd)} over {ev.seeds} seeds (trial #{r.number} of {study_name!r}, "
              f"split seed {ev.split_seed})")
