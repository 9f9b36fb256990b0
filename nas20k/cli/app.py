"""The `nas20k` command line (typer): the app, its error handling, `train`, and what every command shares.

Every mistake a user can fix is a `UserError`, printed as one `error:` line by `Cli.main` (option-parsing errors
too); anything else is a bug and keeps its traceback. torch, optuna and plotly are imported inside the commands
that use them, so `--help` and errors answer at once. The commands live in `run.py` (search, confirm) and
`show.py` (best, trials, report, dashboard).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from nas20k.base.errors import UserError
from nas20k.cli.options import DATA_OPTIONS, DEVICE_OPTIONS, add_options, recipe_options
from nas20k.core.factory import PRESETS, ArchSpec, summary
from nas20k.core.recipe import TrainConfig, load_recipe
from nas20k.readers.tables import pct, table

if TYPE_CHECKING:
    import optuna

out = Console(highlight=False)  # a terminal's width; 80 columns in logs and pipes unless COLUMNS says otherwise
err = Console(stderr=True, highlight=False)
MARK = {True: "[green]✓[/green]", False: "[red]✗[/red]", None: "[yellow]?[/yellow]"}  # passed, failed, unconfirmed


class Cli(TyperGroup):
    """One place that turns a user's mistake into one line on stderr and an exit code."""

    def main(self, args: Any = None, prog_name: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)  # typer hands back an Exit's code
        except typer.TyperException as e:  # option parsing; a bare command's help (no_args_is_help) comes this way too
            message, ctx = e.format_message(), getattr(e, "ctx", None)
            if "\n" in message:
                err.print(message, markup=False)
            else:
                err.print(f"[red]error:[/red] {message}" + (f" (see: {ctx.command_path} --help)" if ctx else ""),
                          soft_wrap=True)
            code = e.exit_code
        except UserError as e:
            err.print(f"[red]error:[/red] {e}", soft_wrap=True)
            code = 1
        except typer.Exit as e:
            code = e.exit_code
        except typer.Abort:
            code = 130
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(cls=Cli, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Search small MNIST CNNs under a parameter and epoch budget (default: < 20,000 params, "
                       "<= 20 epochs, >= 99.4 % test).")


@app.command("train")
@add_options(recipe_options(), into="recipe_flags")
@add_options({**DEVICE_OPTIONS, **DATA_OPTIONS}, into="run")
def train_cmd(
    preset: Annotated[str | None, typer.Option(help=f"Architecture preset: {', '.join(PRESETS)}.",
                                               show_default=False)] = None,
    spec: Annotated[Path | None, typer.Option(help="Architecture as a spec JSON file, e.g. studies/best/spec.json.",
                                              show_default=False)] = None,
    recipe: Annotated[Path | None, typer.Option(help="Take the recipe from a JSON file (an export's metrics.json, or a "
                                                "recipe); the recipe flags are then ignored, except --seed.",
                                                show_default=False)] = None,
    compile: Annotated[bool, typer.Option(  # noqa: A002
        help="torch.compile the model (tens of seconds per architecture).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    recipe_flags: dict | None = None,
    run: dict | None = None,
) -> None:
    """Train one architecture (a preset or a spec file), then report its test accuracy."""
    from nas20k.core.data import load_mnist
    from nas20k.core.runtime import resolve
    from nas20k.core.train import EpochStats, evaluate, train

    if (preset is None) == (spec is None):
        raise UserError("give exactly one of --preset NAME or --spec FILE")
    if preset is not None and preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    arch = PRESETS[preset] if preset else ArchSpec.load(spec)
    arch.validate()
    cfg = replace(load_recipe(recipe), seed=recipe_flags["seed"]) if recipe else TrainConfig(**recipe_flags)
    cfg.validate()
    runtime = resolve(run["device"], run["precision"], compile=compile, cuda_graphs=run["cuda_graphs"])
    data = load_mnist(run["data_dir"], val_size=run["val_size"], split_seed=run["split_seed"], limit=run["limit"],
                      device=runtime.device, download=run["download"])
    if cfg.batch_size > len(data.train):
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the {len(data.train):,} training images")
    out.print(summary(arch))
    out.print(f"train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,} images "
              f"on {runtime.describe()}")
    out.print(f"recipe: {json.dumps(cfg.to_dict())}", soft_wrap=True)

    def log(s: EpochStats) -> None:
        out.print(f"epoch {s.epoch:>3}/{cfg.epochs}  loss {s.train_loss:.4f}  train {pct(s.train_acc)}  "
                  f"val {pct(s.val_acc)}  lr {s.lr:.3g}  {s.seconds:.1f}s")

    result = train(arch, cfg, data, log, runtime=runtime, progress=not quiet)
    if result.status == "diverged":
        raise UserError(f"diverged: the loss became NaN/inf in epoch {len(result.history) + 1}; lower --lr")
    total = sum(s.seconds for s in result.history)
    out.print(f"params {arch.num_params():,}  val {pct(result.history[-1].val_acc)}  "
              f"test {pct(evaluate(result.model, data.test))}  ({total:.0f}s training)")


# --- shared by the commands ---------------------------------------------------------------------

def quiet_optuna() -> None:
    """Our own lines say what happens to each study and trial; Optuna's would repeat them."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)


def open_study(study_name: str, storage: str | None) -> optuna.Study:
    from nas20k.runner.storage import default_storage, load_study

    quiet_optuna()
    return load_study(storage or default_storage(study_name), study_name)


def names(study_name: str, storage: str | None) -> str:
    """The flags that name a study, for the "next:" hints, runnable as shown: no --storage when it came from
    NAS20K_STORAGE (read again from there), else the URL without its password (libpq reads PGPASSWORD or
    ~/.pgpass), never the password itself."""
    from nas20k.runner.storage import runnable

    shown = storage and storage != os.environ.get("NAS20K_STORAGE")
    return ((f" --study-name {study_name}" if study_name != "nas20k" else "")
            + (f" --storage {shlex.quote(runnable(storage))}" if shown else ""))


def show_ranked(study: optuna.Study, k: int) -> None:
    """The `k` best completed trials, in the ranking `best` uses."""
    from nas20k.readers.record import StudyMeta, search_records
    from nas20k.readers.results import ranked, trials_frame

    meta = StudyMeta.of(study)
    top = ranked(search_records(study), meta.goal, meta.budget)[:k]
    out.print(table(trials_frame(top), wide=False))


def main() -> None:
    app()
