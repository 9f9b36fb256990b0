"""Flags declared once and shared by several commands: the recipe's (one per `TrainConfig` field, help from its
metadata) and those of every command that runs workers (search and confirm). Only the CLI imports this.

typer builds a command's options from its function signature; `add_options` extends that signature with a group
of declared options and hands them to the command as one dict, so no command repeats them.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from nas20k.core.pruners import pruner_help
from nas20k.core.recipe import TrainConfig
from nas20k.core.runtime import PRECISIONS

Option = tuple[Any, Any]  # (annotation with its typer.Option, default)

DATA_OPTIONS: dict[str, Option] = {
    "data_dir": (Annotated[Path | None, typer.Option("--data-dir", envvar="NAS20K_DATA_DIR", show_default=False,
                 help="Folder holding MNIST/raw/ (default: ~/.cache/nas20k, downloaded on first use).")], None),
    "download": (Annotated[bool, typer.Option(
        help="Download MNIST into the data folder when it is missing (needs internet).")], True),
    "val_size": (Annotated[int, typer.Option(help="Validation images carved (seeded) from the 60k training set; "
                                                  "the only split used to choose models.")], 5000),
    "split_seed": (Annotated[int, typer.Option(
        help="Seed of which training images are held out for val. A study records it; a new study on another seed "
             "scores the warm start's designs on val images they were not chosen on.")], 0),
    "limit": (Annotated[int | None, typer.Option(
        help="Use only the first N training and test images (quick smoke runs).", show_default=False)], None),
}
DEVICE_OPTIONS: dict[str, Option] = {
    "device": (Annotated[str, typer.Option(
        help="Where to train: auto (a GPU when CUDA is available, else the CPU), cpu, cuda or cuda:N.")], "auto"),
    "precision": (Annotated[str, typer.Option(
        help=f"Training arithmetic: {', '.join(PRECISIONS)} (auto: bf16 autocast on a CPU with hardware bf16, fp32 "
             "elsewhere). Weights and exports stay fp32.")], "auto"),
    "cuda_graphs": (Annotated[bool, typer.Option(
        help="On CUDA, replay the training step as a captured CUDA graph (--no-cuda-graphs: eager).")], True),
}
STUDY_OPTIONS: dict[str, Option] = {
    "study_name": (Annotated[str, typer.Option("--study-name",
                                               help="Name of the study inside the storage.")], "nas20k"),
    "storage": (Annotated[str | None, typer.Option(
        envvar="NAS20K_STORAGE", show_default=False,
        help="Optuna storage URL: sqlite:///studies/x.db or postgresql://user@host/db (the password from PGPASSWORD "
             "or ~/.pgpass; one in the URL is never printed, but `ps` shows a command line: prefer NAS20K_STORAGE)  "
             "\\[default: sqlite:///studies/<study-name>.db]")], None),
}
RUN_OPTIONS: dict[str, Option] = {
    **STUDY_OPTIONS,
    "artifacts": (Annotated[Path | None, typer.Option(
        show_default=False, help="Folder for trial weights (share it between machines)  "
                                 "\\[default: <study-name>-artifacts next to the SQLite file]")], None),
    "jobs": (Annotated[int | None, typer.Option(
        show_default=False, help="Trials trained at once. Default: one per CPU core (one thread each), or 8 per GPU; "
                                 "docs/design.md says why.")], None),
    **DEVICE_OPTIONS,
    "heartbeat": (Annotated[int, typer.Option(
        help="Seconds between worker heartbeats; a worker silent for twice this is declared dead and its trial "
             "retried.")], 30),
    "storage_patience": (Annotated[float, typer.Option(
        help="Seconds to wait out a storage outage (database restart, lost connection) before giving up.")], 120.0),
    **DATA_OPTIONS,
    "quiet": (Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")], False),
}
# confirm's runs are ranked with the search's, so they must be scored on its split: unless given, it is the study's
CONFIRM_OPTIONS: dict[str, Option] = {
    **RUN_OPTIONS,
    "val_size": (Annotated[int | None, typer.Option(show_default=False, help=(
        "Validation images, as the study was searched with  \\[default: the study's]"))], None),
    "limit": (Annotated[int | None, typer.Option(show_default=False, help=(
        "The first N training and test images, as the study was searched with  \\[default: the study's]"))], None),
    "split_seed": (Annotated[int | None, typer.Option(show_default=False, help=(
        "The val split's seed, as the study was searched with  \\[default: the study's]"))], None),
}
PRUNER_HELP = pruner_help()


def recipe_options() -> dict[str, Option]:
    """One flag per recipe field: --epochs, --batch-size, ..., --nesterov/--no-nesterov."""
    return {f.name: (Annotated[type(f.default), typer.Option(help=f.metadata["help"])], f.default)
            for f in fields(TrainConfig)}


def add_options(group: dict[str, Option], into: str) -> Callable[[Callable], Callable]:
    """Give the decorated command every option of `group`, collected into its keyword argument `into` (a dict)."""

    def decorate(command: Callable) -> Callable:
        sig = inspect.signature(command)
        # the command's own annotations, resolved where it lives
        hints = typing.get_type_hints(command, include_extras=True)
        kept = [p.replace(annotation=hints.get(name, p.annotation))
                for name, p in sig.parameters.items() if name != into]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                 for name, (annotation, default) in group.items()]

        def run(**kwargs: Any) -> Any:
            collected = {name: kwargs.pop(name) for name in group}
            return command(**kwargs, **{into: collected})

        run.__name__, run.__doc__ = command.__name__, command.__doc__
        run.__signature__ = sig.replace(
            parameters=[*(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept), *added])
        run.__annotations__ = {p.name: p.annotation for p in run.__signature__.parameters.values()}
        return run

    return decorate
