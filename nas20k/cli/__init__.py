"""The command line: the only typer code, on top of every other wing. Importing it registers every command."""

from nas20k.cli import run, show, zoo  # noqa: F401 - each module adds its commands to `app`, in this order
from nas20k.cli.app import app, main

__all__ = ["app", "main"]
